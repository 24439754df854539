"""The webhook dispatcher: sends each subscription's deliveries in log order.

It runs beside the runners of ``cqrs projector run`` under a lease of its own
(``webhooks:dispatch``, the runners' advisory-lock lease: one active dispatcher, hot
standbys). While leading it keeps one worker task per subscription that has pending
deliveries; a worker sends the head of its queue (the oldest delivery not yet
DELIVERED), records the outcome, and only then moves on, so a subscription's events
arrive in log order and a slow or dead endpoint delays nothing but its own queue.

Every outgoing call goes through the API gateway (:mod:`common.gateway`): in-call
retries, a breaker and a rate limit per host. Between calls the dispatcher's own
schedule applies: a failed attempt is retried after an exponential back-off with jitter
(``webhooks_retry_initial_ms`` doubling up to ``webhooks_retry_max_ms``), an open
breaker or a long ``Retry-After`` postpones the delivery without counting an attempt
(resp. counting one), and after ``webhooks_max_attempts`` the delivery is FAILED and the
subscription *parked*: its later deliveries wait behind it, in order, until ``cqrs
webhooks redeliver``.

Delivery is at least once: a crash between the endpoint's answer and the UPDATE that
records it sends that one delivery again (same ``webhook-id``; receivers de-duplicate
on it, as the Standard Webhooks specification expects).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from dataclasses import dataclass

import asyncpg

from common.cancellation import raise_if_cancelled
from common.event_log import EVENT_COLUMNS, parse_json, stored_event
from common.gateway import CircuitOpen, Gateway, GatewayError, RetryLater
from common.metrics import (
    WEBHOOK_ATTEMPTS,
    WEBHOOK_OLDEST_PENDING,
    WEBHOOK_PARKED,
    WEBHOOK_PENDING,
)
from common.outages import is_transient
from common.webhook_urls import resolved_problem
from projector.errors import LeadershipLost
from projector.leadership import AdvisoryLease
from projector.pacing import Backoff
from projector.wakeup import sleep_unless, wait_any
from projector.webhooks import messages
from projector.webhooks import tables as sql

log = logging.getLogger(__name__)

NAME = "webhooks:dispatch"
_HEAD = sql.HEAD.format(event_columns=EVENT_COLUMNS)
_GAUGES_EVERY_S = 1.0
_MAX_ERROR = 500


@dataclass(frozen=True, slots=True)
class DispatchConfig:
    max_attempts: int = 8
    retry_initial_s: float = 1.0
    retry_max_s: float = 300.0
    timeout_s: float = 5.0
    poll_s: float = 0.5
    allow_private: bool = False
    rotation_grace_s: float = 86_400.0

    def backoff(self, attempts: int) -> float:
        """Seconds before the next attempt after ``attempts`` failed ones: exponential,
        capped, with jitter (half to all of it) so many failing deliveries spread out."""
        delay = min(self.retry_max_s, self.retry_initial_s * 2 ** max(attempts - 1, 0))
        return float(delay * random.uniform(0.5, 1.0))


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
        """Send ``sub_id``'s queue head after head until it is empty, parked or disabled."""
        backoff = Backoff(0.05, 1.0)
        while not stop.is_set():
            try:
                row = await self._pool.fetchrow(_HEAD, sub_id, self._config.rotation_grace_s)
                if (
                    row is None
                    or row["status"] != sql.PENDING
                    or row["parked_at"] is not None
                    or row["subscription_status"] != sql.ACTIVE
                ):
                    return  # nothing to send, or held back: the dispatcher looks again later
                if row["wait_s"] > 0:
                    await sleep_unless(stop, min(float(row["wait_s"]), self._config.poll_s * 4))
                    continue
                await self._attempt(row)
                backoff.success()
            except Exception as exc:
                raise_if_cancelled()
                if not is_transient(exc):
                    log.exception("%s: subscription %s: unexpected error", NAME, sub_id)
                await sleep_unless(stop, backoff.failure())

    async def _attempt(self, row: asyncpg.Record) -> None:
        delivery_id = int(row["delivery_id"])
        event = stored_event(row)
        metadata = parse_json(row["metadata"]) if row["metadata"] else {}
        content = messages.body(event, metadata if isinstance(metadata, dict) else {})
        msg_id = messages.webhook_id(delivery_id)
        url = str(row["url"])
        problem = await resolved_problem(url, allow_private=self._config.allow_private)
        if problem is not None:
            await self._failed(row, 0, f"refused: url {problem}", counts=True)
            return
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
            # Nothing was sent: not an attempt; come back when the breaker half-opens.
            await self._failed(row, 0, str(exc), counts=False, after_s=max(exc.retry_in_s, 0.05))
            WEBHOOK_ATTEMPTS.labels("circuit_open").inc()
            return
        except RetryLater as exc:
            await self._failed(row, exc.status, str(exc), counts=True, after_s=exc.after_s)
            return
        except GatewayError as exc:
            status = getattr(exc, "last_status", None) or 0
            await self._failed(row, int(status), str(exc), counts=True)
            return
        if 200 <= response.status_code < 300:
            await self._pool.execute(sql.DELIVERED_NOW, delivery_id, response.status_code)
            WEBHOOK_ATTEMPTS.labels("delivered").inc()
            return
        reason = f"HTTP {response.status_code}: {response.text[:200]}"
        await self._failed(row, response.status_code, reason, counts=True)

    async def _failed(
        self,
        row: asyncpg.Record,
        status: int,
        error: str,
        *,
        counts: bool,
        after_s: float | None = None,
    ) -> None:
        """Record a failed attempt (or a postponement when it does not count); park the
        delivery as FAILED when it was the last allowed attempt."""
        attempts = int(row["attempts"]) + (1 if counts else 0)
        park = counts and attempts >= self._config.max_attempts
        delay = after_s if after_s is not None else self._config.backoff(attempts)
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(
                sql.ATTEMPT_FAILED,
                int(row["delivery_id"]),
                status,
                1 if counts else 0,
                delay,
                park,
                error[:_MAX_ERROR],
            )
            if park:
                await conn.execute(sql.PARK, row["subscription_id"])
        if park:
            WEBHOOK_ATTEMPTS.labels("failed").inc()
            log.warning(
                "%s: delivery %s FAILED after %d attempts (%s); its subscription is parked "
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


def _remove(sub_id: str) -> None:
    for gauge in (WEBHOOK_PENDING, WEBHOOK_OLDEST_PENDING, WEBHOOK_PARKED):
        with contextlib.suppress(KeyError):
            gauge.remove(sub_id)
