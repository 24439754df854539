"""The webhook dispatcher: sends each subscription's deliveries, in the order that matters.

It runs beside the runners of ``cqrs projector run`` under a lease of its own
(``webhooks:dispatch``, the runners' advisory-lock lease: one active dispatcher, hot
standbys). While leading it keeps one worker task per subscription that has pending
deliveries. A worker keeps up to ``max_in_flight`` of its subscription's deliveries in
flight, chosen by the order rules of :mod:`.order`: one aggregate's deliveries strictly one
after the other in log order, different aggregates overlapping; a delivery being retried
holds back everything after it; a FAILED one parks the subscription. Each attempt records
its outcome, and the worker reads the front of its queue again as attempts end. A slow or
dead endpoint so delays nothing but its own queue.

Every outgoing call goes through the API gateway (:mod:`common.gateway`): in-call
retries, a breaker and a rate limit per host, a whole-attempt timeout, a bounded read of
the answer, and every address the URL's host resolves to vetted against the SSRF rules
(:mod:`common.webhook_urls`) for the very connection it makes. Between calls the
dispatcher's own schedule applies: a failed attempt is retried after an exponential
back-off with jitter (``webhooks_retry_initial_ms`` doubling up to
``webhooks_retry_max_ms``); an open breaker or a wait for a free slot (the host's or the
gateway's pool, taken by other deliveries) postpones the delivery without counting an
attempt (a call that sent anything, a failed half-open probe included, ends with the
failure it got, and counts); a long ``Retry-After`` postpones it and counts one. A delivery
is FAILED and its subscription *parked* (its later deliveries wait, in order, until ``cqrs
webhooks redeliver``) after ``webhooks_max_attempts``, or at its first failure once it has
been failing for ``webhooks_max_age_ms`` (since its first failed attempt or open-breaker
refusal), whatever the breaker let through meanwhile. A delivery that cannot be attempted
at all (a URL the client cannot send to, stored before today's rules, or a host that
resolves to a refused address) is FAILED and parked at once, with the reason
(``refused: ...``), instead of being tried again and again.

A receiver's answer is read up to the gateway's bound (``webhooks_max_response_bytes``) and
at most :data:`EXCERPT_CHARS` printable characters of it are kept in ``last_error``.

Delivery is at least once: a crash between the endpoint's answer and the UPDATE that
records it sends those deliveries again (same ``webhook-id``; receivers de-duplicate
on it, as the Standard Webhooks specification expects).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from asyncio import FIRST_COMPLETED
from dataclasses import dataclass
from typing import Any

import asyncpg

from common.cancellation import raise_if_cancelled
from common.event_log import EVENT_COLUMNS, parse_json, stored_event
from common.gateway import CircuitOpen, Gateway, GatewayError, RateLimited, RetryLater
from common.metrics import (
    WEBHOOK_ATTEMPTS,
    WEBHOOK_OLDEST_PENDING,
    WEBHOOK_PARKED,
    WEBHOOK_PENDING,
)
from common.outages import is_transient
from common.webhook_urls import url_problem
from projector.errors import LeadershipLost
from projector.leadership import AdvisoryLease
from projector.pacing import Backoff
from projector.wakeup import sleep_unless, wait_any
from projector.webhooks import messages, order
from projector.webhooks import tables as sql

log = logging.getLogger(__name__)

NAME = "webhooks:dispatch"
_TO_SEND = sql.TO_SEND.format(event_columns=EVENT_COLUMNS)
# The queue rows a worker reads per look, per delivery it may have in flight: enough to
# find other aggregates behind a run of one aggregate's deliveries.
_WINDOW_PER_SLOT = 4
_GAUGES_EVERY_S = 1.0
_MAX_ERROR = 500
# The most of a receiver's answer kept in last_error (ListWebhookDeliveries shows it).
EXCERPT_CHARS = 200


@dataclass(frozen=True, slots=True)
class DispatchConfig:
    max_attempts: int = 8
    retry_initial_s: float = 1.0
    retry_max_s: float = 300.0
    timeout_s: float = 5.0
    poll_s: float = 0.5
    allow_private: bool = False
    rotation_grace_s: float = 86_400.0
    max_in_flight: int = 32  # per subscription
    max_age_s: float = 86_400.0

    def __post_init__(self) -> None:
        if self.max_in_flight < 1:
            raise ValueError("webhooks_max_in_flight must be at least 1")
        if self.max_age_s <= 0:
            raise ValueError("webhooks_max_age_ms must be positive")

    def backoff(self, attempts: int) -> float:
        """Seconds before the next attempt after ``attempts`` failed ones: exponential,
        capped, with jitter (half to all of it) so many failing deliveries spread out."""
        delay = min(self.retry_max_s, self.retry_initial_s * 2 ** max(attempts - 1, 0))
        return float(delay * random.uniform(0.5, 1.0))


class _Flight:
    """One worker's attempts in flight, and what the finished ones said."""

    def __init__(self) -> None:
        self.tasks: dict[int, asyncio.Task[int | None]] = {}
        self.answered: dict[int, int] = {}  # delivery -> its 2xx status, not recorded yet
        self.errors = 0  # attempts that ended in an error since the last look

    def collect(self) -> None:
        """Take the finished attempts out of :attr:`tasks`."""
        for ident in [i for i, task in self.tasks.items() if task.done()]:
            task = self.tasks.pop(ident)
            if task.cancelled() or task.exception() is not None:
                self.errors += 1
            elif (status := task.result()) is not None:
                self.answered[ident] = status


class WebhookDispatcher:
    """Delivers pending webhook deliveries while it holds its lease."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        gateway: Gateway,
        lease: AdvisoryLease,
        config: DispatchConfig,
        wake: asyncio.Event | None = None,
    ) -> None:
        self.name = NAME
        self._pool = pool
        self._gateway = gateway
        self._lease = lease
        self._config = config
        self.wake = wake if wake is not None else asyncio.Event()
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._gauged: set[str] = set()
        self.state = "standby"

    @property
    def leading(self) -> bool:
        return self._lease.held

    async def run(self, stop: asyncio.Event) -> None:
        """Lead (or stand by) and deliver until ``stop`` is set."""
        while not stop.is_set():
            if not await self._lease.acquire(stop):
                break
            graceful = True
            try:
                await self._lead(stop)
            except LeadershipLost:
                graceful = False  # another dispatcher may lead already: stop sending now
                log.warning("%s: lost its lease; standing by", NAME)
            finally:
                await self._stop_workers(graceful)
                await self._lease.release()
                self._forget_gauges()
                self.state = "standby"
            raise_if_cancelled()
        self.state = "stopped"

    async def _lead(self, stop: asyncio.Event) -> None:
        backoff = Backoff(0.05, 1.0)
        gauged_at = 0.0
        self.state = "delivering"
        log.info("%s: leading", NAME)
        while not stop.is_set():
            self._lease.check()
            self.wake.clear()
            try:
                for sub_id in await self._workable():
                    task = self._workers.get(sub_id)
                    if task is None or task.done():
                        self._workers[sub_id] = asyncio.create_task(
                            self._work(sub_id, stop), name=f"webhook-{sub_id}"
                        )
                if time.monotonic() - gauged_at >= _GAUGES_EVERY_S:
                    gauged_at = time.monotonic()
                    await self._gauges()
                backoff.success()
                delay = self._config.poll_s
            except Exception as exc:
                raise_if_cancelled()
                delay = backoff.failure()
                if backoff.should_log():
                    log.warning("%s: %s; retrying in %.2fs", NAME, exc, delay)
            await wait_any((stop, self.wake), delay)

    async def _workable(self) -> list[str]:
        return [r["id"] for r in await self._pool.fetch(sql.WORKABLE)]

    async def _work(self, sub_id: str, stop: asyncio.Event) -> None:
        """Keep up to ``max_in_flight`` of ``sub_id``'s deliveries in flight, as the order
        rules allow, until its queue is empty, parked or disabled (or ``stop``); the attempts
        in flight then finish and are recorded (a cancellation cancels them)."""
        flight = _Flight()
        stopped = asyncio.ensure_future(stop.wait())
        try:
            await self._fill(sub_id, stop, stopped, flight)
        except asyncio.CancelledError:
            for task in flight.tasks.values():
                task.cancel()
            raise
        finally:
            stopped.cancel()
            if flight.tasks:
                await asyncio.gather(*flight.tasks.values(), return_exceptions=True)
                flight.collect()
            if flight.answered:
                with contextlib.suppress(Exception):
                    await self._record(flight, self._pool)

    async def _fill(
        self, sub_id: str, stop: asyncio.Event, stopped: asyncio.Future[Any], flight: _Flight
    ) -> None:
        cfg = self._config
        backoff = Backoff(0.05, 1.0)
        while not stop.is_set():
            try:
                # One connection for the look (a pool's release resets the session).
                async with self._pool.acquire() as conn:
                    # Record the answered ones first: a recorded delivery leaves the queue,
                    # an unrecorded one would be sent again.
                    await self._record(flight, conn)
                    free = cfg.max_in_flight - len(flight.tasks)
                    window = len(flight.tasks) + free * _WINDOW_PER_SLOT
                    rows = await conn.fetch(sql.QUEUE, sub_id, window)
                    step = order.plan(rows, flight.tasks.keys(), free)
                    sending = (
                        await conn.fetch(_TO_SEND, step.send, cfg.rotation_grace_s)
                        if step.send
                        else []
                    )
                for row in sending:
                    ident = int(row["delivery_id"])
                    flight.tasks[ident] = asyncio.create_task(
                        self._send(row), name=f"webhook-{sub_id}-{ident}"
                    )
            except Exception as exc:
                raise_if_cancelled()
                if not is_transient(exc):
                    log.exception("%s: subscription %s: unexpected error", NAME, sub_id)
                await sleep_unless(stop, backoff.failure())
                continue
            wait_s = min(step.due_in_s or cfg.poll_s, cfg.poll_s)
            if not flight.tasks:
                if step.empty or step.held:
                    return  # the dispatcher starts a worker again when there is work
                await sleep_unless(stop, wait_s)
                continue
            # Look again as soon as an attempt ends (the next delivery of its aggregate may
            # go, or another one in its slot), when a waiting delivery is due, or after a
            # poll (new deliveries behind slow ones in flight).
            await asyncio.wait(
                [*flight.tasks.values(), stopped], timeout=wait_s, return_when=FIRST_COMPLETED
            )
            flight.collect()
            if flight.errors:
                flight.errors = 0
                await sleep_unless(stop, backoff.failure())
            else:
                backoff.success()

    async def _record(self, flight: _Flight, db: asyncpg.Pool | asyncpg.Connection) -> None:
        """Mark the deliveries answered 2xx as DELIVERED, all in one statement."""
        if not flight.answered:
            return
        answered = flight.answered
        await db.execute(sql.DELIVERED_NOW, list(answered), list(answered.values()))
        flight.answered = {}

    async def _send(self, row: asyncpg.Record) -> int | None:
        """One attempt of one delivery: the 2xx status it was answered with (to record),
        or None when it recorded its outcome itself. An error (the database, say) leaves it
        PENDING, to be sent again."""
        try:
            return await self._attempt(row)
        except Exception as exc:
            raise_if_cancelled()
            if not is_transient(exc):
                log.exception(
                    "%s: delivery %s: unexpected error",
                    NAME,
                    messages.webhook_id(int(row["delivery_id"])),
                )
            raise

    async def _attempt(self, row: asyncpg.Record) -> int | None:
        """Send one delivery; its 2xx status, or None once a failure is recorded."""
        delivery_id = int(row["delivery_id"])
        event = stored_event(row)
        metadata = parse_json(row["metadata"]) if row["metadata"] else {}
        content = messages.body(event, metadata if isinstance(metadata, dict) else {})
        msg_id = messages.webhook_id(delivery_id)
        url = str(row["url"])
        problem = url_problem(url, allow_private=self._config.allow_private)
        if problem is not None:
            # Stored before today's rules: it cannot become sendable by waiting.
            await self._failed(row, 0, f"refused: url {problem}", counts=True, final=True)
            return None
        secrets = [s for s in (str(row["secret"]), str(row["previous_secret"])) if s]
        headers = messages.headers(secrets, msg_id, int(time.time()), content)
        try:
            response = await self._gateway.request(
                "POST",
                url,
                content=content,
                headers=headers,
                idempotency_key=msg_id,
                timeout_s=self._config.timeout_s,
            )
        except CircuitOpen as exc:
            # Nothing was sent: not an attempt; come back when the breaker half-opens. The
            # host is failing, though: the failing clock runs (max age).
            await self._failed(
                row, 0, str(exc), counts=False, after_s=max(exc.retry_in_s, 0.05), failing=True
            )
            WEBHOOK_ATTEMPTS.labels("circuit_open").inc()
            return None
        except RateLimited as exc:
            # No slot free in time (other deliveries hold them): nothing was sent, nothing
            # is wrong with this delivery. Not an attempt, not failing; try again shortly.
            await self._failed(
                row, 0, str(exc), counts=False, after_s=self._config.poll_s, failing=False
            )
            WEBHOOK_ATTEMPTS.labels("postponed").inc()
            return None
        except RetryLater as exc:
            await self._failed(row, exc.status, str(exc), counts=True, after_s=exc.after_s)
            return None
        except GatewayError as exc:
            status = getattr(exc, "last_status", None) or 0
            # Not retryable (a refused address): the same call would be refused again.
            await self._failed(row, int(status), str(exc), counts=True, final=not exc.retryable)
            return None
        if 200 <= response.status_code < 300:
            WEBHOOK_ATTEMPTS.labels("delivered").inc()
            return response.status_code
        reason = f"HTTP {response.status_code}: {excerpt(response.content)}"
        await self._failed(row, response.status_code, reason, counts=True)
        return None

    async def _failed(
        self,
        row: asyncpg.Record,
        status: int,
        error: str,
        *,
        counts: bool,
        after_s: float | None = None,
        final: bool = False,
        failing: bool = True,
    ) -> None:
        """Record a failed attempt (or a postponement when it does not count); park the
        delivery as FAILED when it was the last allowed attempt, or ``final`` (it cannot
        succeed by trying again), or when it has been ``failing`` longer than the maximum
        age (``failing`` False: a postponement that says nothing about the receiver)."""
        error = printable(error)[:_MAX_ERROR]
        attempts = int(row["attempts"]) + (1 if counts else 0)
        failing_s = row["failing_s"]
        aged = failing and failing_s is not None and failing_s >= self._config.max_age_s
        park = (counts and (final or attempts >= self._config.max_attempts)) or aged
        if aged:
            error = f"failing for {failing_s:.0f} s (max age), last: {error}"[:_MAX_ERROR]
        delay = after_s if after_s is not None else self._config.backoff(attempts)
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(
                sql.ATTEMPT_FAILED,
                int(row["delivery_id"]),
                status,
                1 if counts else 0,
                delay,
                park,
                error,
                failing,
            )
            if park:
                await conn.execute(sql.PARK, row["subscription_id"])
        if park:
            WEBHOOK_ATTEMPTS.labels("failed").inc()
            log.warning(
                "%s: delivery %s FAILED after %d attempt(s) (%s); its subscription is parked "
                "until `cqrs webhooks redeliver`",
                NAME,
                messages.webhook_id(int(row["delivery_id"])),
                attempts,
                error,
            )
        elif counts:
            WEBHOOK_ATTEMPTS.labels("retry").inc()

    async def _gauges(self) -> None:
        seen: set[str] = set()
        for r in await self._pool.fetch(sql.BACKLOG):
            seen.add(r["id"])
            WEBHOOK_PENDING.labels(r["id"]).set(r["pending"])
            WEBHOOK_OLDEST_PENDING.labels(r["id"]).set(r["oldest_s"] if r["pending"] else 0)
            WEBHOOK_PARKED.labels(r["id"]).set(1 if r["parked"] else 0)
        for gone in self._gauged - seen:
            _remove(gone)
        self._gauged = seen

    def _forget_gauges(self) -> None:
        """Only the leader knows the queues: a standby exports none of them."""
        for sub_id in self._gauged:
            _remove(sub_id)
        self._gauged = set()

    async def _stop_workers(self, graceful: bool) -> None:
        """Stop every worker; ``graceful``: first let each finish (and record) the attempt
        it is making, for at most one call's timeout (a SIGTERM then repeats nothing)."""
        workers = list(self._workers.values())
        self._workers.clear()
        if graceful and workers:
            await asyncio.wait(workers, timeout=self._config.timeout_s)
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)


def excerpt(body: bytes) -> str:
    """At most :data:`EXCERPT_CHARS` characters of a receiver's answer, for ``last_error``:
    decoded leniently, every non-printable character shown as ``?``."""
    return printable(body[: EXCERPT_CHARS * 4].decode("utf-8", "replace")[:EXCERPT_CHARS])


def printable(text: str) -> str:
    """``text`` with every non-printable character as ``?``: last_error is shown to API
    callers and written to logs, and PostgreSQL refuses NUL in text."""
    return "".join(c if c.isprintable() else "?" for c in text)


def _remove(sub_id: str) -> None:
    for gauge in (WEBHOOK_PENDING, WEBHOOK_OLDEST_PENDING, WEBHOOK_PARKED):
        with contextlib.suppress(KeyError):
            gauge.remove(sub_id)
