"""The runner of one consumer: lead, read a batch, apply it, repeat.

Loop (while holding the consumer's lease, see :mod:`leadership`): check the lease,
read up to ``projector_batch_size`` events after the checkpoint in commit-safe
order (:mod:`outbox`) and hand them to the consumer, which applies them and moves
its checkpoint atomically (a compare-and-set). A full batch is followed at once;
otherwise the runner sleeps until a NOTIFY (a hint) or the poll interval (the
truth). If the compare-and-set fails (a rebuild switched the copy, or another
runner got in) the runner reloads the checkpoint and goes on.

Failures:

- The consumer's state is gone (:class:`~projector.errors.StoreLost`: never built,
  Redis emptied or restarted, a generation or checkpoint row vanished), on any path:
  the runner rebuilds it from the event log into a new copy and switches to it
  (:mod:`projector.rebuild`), the path ``cqrs projector rebuild`` takes. Readers are
  told the projection is being built meanwhile; they never see a half-built one.
- Unavailable PostgreSQL/Redis (:func:`common.outages.is_transient`) and other errors
  not attributable to an event: log, back off (short at first, capped, starting over
  after every applied batch, never sooner than the failure itself asks for: a breaker's
  ttl, a Retry-After), retry; leadership is kept unless its heartbeat fails. The lag
  gauges keep counting meanwhile, so a consumer stuck on an outage shows as behind.
- A *poison event* (the consumer cannot apply it although its state is intact): this
  consumer stops, the others keep running. We chose stopping over skipping because
  a skipped event silently corrupts the read model forever, while a stopped one is
  visible and recoverable: an ERROR log, the gauge ``cqrs_projection_failed`` = 1 and
  a row in ``read.projection_failures`` (see ``cqrs projector status``). Everything
  before the poison event is committed (a batch whose commit fails is retried one
  event at a time to find it). The runner gives up its lease, so a hot standby (if
  any) retries once and stops the same way. Restarting the projector retries the
  event; the row is cleared by the first successful commit after that.

  With the ``park`` policy (``CQRS_PROJECTOR_PARK``, projections only) the poison event
  parks its aggregate instead (:mod:`projector.parking`): recorded, then the batch is
  applied again without that aggregate's events from it on, and the consumer goes on;
  between batches the runner serves ``cqrs projector unpark`` by re-projecting them.
  The same event refused twice in a row (its aggregate parked, and still) stops it.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg

from common.cancellation import raise_if_cancelled
from common.event_log import COUNT_CAP
from common.events import StoredEvent
from common.metrics import (
    PROJECTION_APPLIED,
    PROJECTION_BATCH_EVENTS,
    PROJECTION_BATCH_SECONDS,
    PROJECTION_DELAY,
    PROJECTION_FAILED,
    PROJECTION_LAG,
    PROJECTION_LAG_SECONDS,
    PROJECTION_PARKED,
    PROJECTION_POSITION,
    PROJECTION_REBUILDING,
    PROJECTION_REBUILDS,
    projection_labels,
)
from common.outages import is_transient
from common.positions import Position
from projector.consumer import Consumer, Lingering
from projector.errors import CheckpointMoved, GaveWay, LeadershipLost, PoisonEvent, StoreLost
from projector.failures import FailureLog
from projector.feed import LogFeed
from projector.leadership import AdvisoryLease
from projector.membership import Membership
from projector.outbox import Batch, behind, read_batch
from projector.pacing import Backoff, retry_hint
from projector.parking import Parked, Parking, Replayable
from projector.rebuild import apply_before, events_to_copy, rebuild_lock, rebuild_one, tracked
from projector.segments import base_name, rebuild_name
from projector.wakeup import Wakeup, sleep_unless, wait_any, wait_ticket

log = logging.getLogger(__name__)

_LAG_EVERY_S = 1.0
_JOIN_WAIT_S = 5.0  # at most, for the process's membership before taking leases
_HELD_RETRY_S = 0.01  # the first look again after a NOTIFY that brought nothing (_Chase)


class Outcome(enum.Enum):
    """Why :meth:`ConsumerRunner.run` returned."""

    STOPPED = "stopped"  # asked to stop
    FAILED = "failed"  # stopped on a poison event


@dataclass(frozen=True, slots=True)
class RunnerConfig:
    batch_size: int
    poll_interval: float  # seconds
    retry_initial: float = 0.05  # first back-off after an error (seconds)
    retry_max: float = 1.0  # back-off cap: an outage is noticed over within this


class ConsumerRunner:
    """Keeps one consumer up to date with the event log."""

    def __init__(
        self,
        *,
        consumer: Consumer,
        db: asyncpg.Pool,
        lease: AdvisoryLease,
        failures: FailureLog,
        wakeup: Wakeup,
        config: RunnerConfig,
        feed: LogFeed | None = None,
        membership: Membership | None = None,
        parking: Parking | None = None,
    ) -> None:
        self.consumer = consumer
        # None: the ``stop`` policy (a poison event stops the consumer); else ``park``.
        self._parking = parking if isinstance(consumer, Replayable) else None
        self._membership = membership  # None: lead whenever the lease is free
        # The process's shared reader of the log (projector.feed); alone: one of its own.
        self._feed = feed if feed is not None else LogFeed(db, [consumer], generation=wakeup)
        self.name = consumer.name
        self._db = db
        self._lease = lease
        self._failures = failures
        self._wakeup = wakeup
        self._config = config
        self._linger = consumer.linger_s if isinstance(consumer, Lingering) else 0.0
        self._lag_at = 0.0
        self.checkpoint: Position | None = None  # last committed/loaded (observability)
        # For /healthz (projector.health): what the runner does now, the last lag counted.
        self.state = "standby"  # following, rebuilding, retrying, stopped-on-poison, stopped
        self.lag_events: int | None = None
        self._batch_events = PROJECTION_BATCH_EVENTS.labels(*projection_labels(self.name))
        self._batch_seconds = PROJECTION_BATCH_SECONDS.labels(*projection_labels(self.name))
        self._delay = PROJECTION_DELAY.labels(*projection_labels(self.name))
        PROJECTION_REBUILDING.labels(*projection_labels(self.name)).set(0)
        if self._parking is None:
            # Nothing parks here: the series says so (the parking sets it otherwise).
            PROJECTION_PARKED.labels(base_name(self.name)).set(0)

    @property
    def parked(self) -> int | None:
        """How many aggregates its consumer has parked, as last read (None: it stops on a
        poison event instead)."""
        return None if self._parking is None else len(self._parking.parked)

    def parked_ids(self) -> frozenset[str]:
        """The ids of the aggregates its consumer has parked, as last read."""
        if self._parking is None:
            return frozenset()
        return frozenset(aggregate_id for _, aggregate_id in self._parking.parked)

    @property
    def leading(self) -> bool:
        """True while this runner holds its consumer's lease."""
        return self._lease.held

    async def run(self, stop: asyncio.Event) -> Outcome:
        """Lead (or stand by) and follow the log until ``stop`` is set or a poison event."""
        PROJECTION_FAILED.labels(*projection_labels(self.name)).set(0)
        members = self._membership
        if members is not None:
            await wait_any((members.joined, stop), _JOIN_WAIT_S)  # know the share first
        while not stop.is_set():
            if not await self._lease.acquire(stop, members):
                break
            try:
                if await self._lead(stop):
                    return Outcome.FAILED
            except GaveWay:
                log.info("%s: another projector process joined; giving way", self.name)
            except LeadershipLost:
                log.warning("%s: lost the runner lock; standing by", self.name)
            finally:
                if members is not None:
                    members.drop(self.name)
                await self._lease.release()
                self._forget_lag()
                if self.state != "stopped-on-poison":
                    self.state = "standby"
            raise_if_cancelled()
        self.state = "stopped"
        return Outcome.STOPPED

    async def _lead(self, stop: asyncio.Event) -> bool:
        """Follow while leading; True if stopped on a poison event."""
        backoff = Backoff(self._config.retry_initial, self._config.retry_max)
        lost: StoreLost | None = None
        while not stop.is_set():
            self._lease.check()
            try:
                if lost is not None:
                    if await self._rebuild(stop, lost):
                        return True
                    lost = None
                return await self._follow(stop, backoff)
            except LeadershipLost:
                raise
            except StoreLost as exc:
                # Found while following: rebuild at once. The rebuild itself lost its copy
                # (Redis emptied again meanwhile): back off before the next attempt.
                delay = 0.0 if lost is None else backoff.failure()
                lost = exc
                if delay:
                    log.warning("%s: %s; rebuilding again in %.2fs", self.name, exc, delay)
                    await sleep_unless(stop, delay)
            except Exception as exc:
                raise_if_cancelled()
                self.state = "retrying"
                delay = max(backoff.failure(), retry_hint(exc) or 0.0)
                await self._lag_while_retrying()
                if backoff.should_log():
                    if is_transient(exc):
                        log.warning("%s: %s; retrying in %.2fs", self.name, exc, delay)
                    else:
                        log.exception("%s: unexpected error; retrying in %.2fs", self.name, delay)
                await sleep_unless(stop, delay)
        return False

    async def _follow(self, stop: asyncio.Event, backoff: Backoff) -> bool:
        consumer = self.consumer
        checkpoint = await consumer.checkpoint()
        self.checkpoint = checkpoint
        # No backoff.success() here: a checkpoint read says nothing about whether the
        # batch will apply (a consumer whose apply keeps failing would retry at once).
        failure_pending = await self._failures.get(self.name) is not None
        careful_until: Position | None = None  # retry one event at a time up to here
        self.state = "following"
        log.info("%s: following from %s", self.name, checkpoint)
        # Woken by a NOTIFY: a read the feed began since then will do; otherwise (first
        # look, poll interval spent) only one begun now (see projector.feed).
        notified = False
        chase = _Chase()
        while not stop.is_set():
            seen = self._wakeup.generation
            ticket = self._wakeup.ticket()
            self._lease.check()
            if self._membership is not None and self._membership.must_yield(self.name):
                raise GaveWay(self.name)
            if self._parking is not None:
                for parked in await self._parking.refresh():
                    await self._unpark(parked, checkpoint)
            if careful_until is not None and checkpoint < careful_until:
                batch = await read_batch(
                    self._db, checkpoint, consumer.consumes, 1, consumer.event_types
                )
            else:
                batch = await self._gather(checkpoint, seen if notified else None)
            if batch.moved:
                started = time.perf_counter()
                if self._parking is not None:
                    batch = self._parking.filter(batch)
                try:
                    await consumer.apply(batch)
                except StoreLost:
                    raise
                except CheckpointMoved as exc:
                    checkpoint = await consumer.checkpoint()
                    self.checkpoint = checkpoint
                    log.info("%s: %s; continuing from %s", self.name, exc, checkpoint)
                    continue
                except PoisonEvent as exc:
                    if await self._park(exc.event, exc):
                        continue  # the same batch again, without the parked aggregate
                    await self._apply_before(batch, exc.event)
                    await self._poison(exc.event, exc)
                    return True
                except Exception as exc:
                    if is_transient(exc) or not batch.events:
                        raise
                    if len(batch.events) == 1:
                        if await self._park(batch.events[0], exc):
                            continue
                        await self._poison(batch.events[0], exc)
                        return True
                    log.warning(
                        "%s: batch failed (%s); retrying its events one by one", self.name, exc
                    )
                    careful_until = batch.events[-1].position
                    continue
                checkpoint = batch.next
                self.checkpoint = checkpoint
                if batch.events and failure_pending:
                    failure_pending = False
                    await self._failures.clear(self.name)
                    log.info("%s: recovered from the recorded failure", self.name)
                await self._observe(batch, time.perf_counter() - started)
            backoff.success()  # the batch applied (or there was nothing to apply)
            if not batch.full:
                if self._linger and batch.events:
                    # NOTIFYs meanwhile fire the ticket taken before the read: the next
                    # read then takes all that came.
                    await sleep_unless(stop, self._linger)
                await wait_ticket(ticket, chase.wait(seen, batch, self._config.poll_interval))
                notified = ticket.is_set()
            raise_if_cancelled()
        return False

    async def _gather(self, at: Position, seen: int | None) -> Batch:
        """The next batch of the consumer from the feed, made of as many reads as it takes
        for ``batch_size`` of its own events (or the horizon): a read covers every
        consumer of the process (the union of their filters), so one narrowed to a consumer
        holds a fraction of a batch, and committing each would multiply the commits."""
        size = self._config.batch_size
        batch = await self._feed.batch(self.consumer, at, size, seen=seen)
        while batch.full and len(batch.events) < size:
            batch = batch.then(await self._feed.batch(self.consumer, batch.next, size, seen=seen))
        return batch

    async def _rebuild(self, stop: asyncio.Event, lost: StoreLost) -> bool:
        """Heal a lost consumer by rebuilding it; True if a poison event prevents that."""
        # Not there when we started leading: most likely a first start (INFO). Gone
        # after we had followed it: its store lost its data (WARNING).
        level = logging.WARNING if self.checkpoint is not None else logging.INFO
        log.log(level, "%s: %s; building it from the event log", self.name, lost.why)
        self.state = "rebuilding"
        if self._membership is not None:
            self._membership.building.add(self.name)
        try:
            return await self._build(stop, level)
        finally:
            if self._membership is not None:
                self._membership.building.discard(self.name)

    async def _build(self, stop: asyncio.Event, level: int) -> bool:
        started = time.monotonic()
        # One lock for every segment of a consumer: the first to get it builds the copy
        # and switches it in split; the others find their checkpoint there then. A shard
        # of a spread projection builds its own copy, under its own lock.
        unit = rebuild_name(self.consumer, self.name)
        async with rebuild_lock(
            self._lease.dsn, unit, wait_until=stop, session=self._lease.session
        ) as locked:
            if not locked:
                return False  # stopping
            try:
                await self.consumer.checkpoint()
                log.info("%s: rebuilt by another process meanwhile", self.name)
                return False
            except StoreLost:
                pass
            # The copy first: from here on readers are told it is being rebuilt (a Redis
            # projection with no generation allocated reads as "not built").
            copy = await self.consumer.new_copy()
            try:
                total = await events_to_copy(self.consumer, self._db)
            except BaseException:
                with contextlib.suppress(Exception):
                    await copy.discard()
                raise
            with tracked(self.name, total, _Applied(self.name)) as advance:
                rebuilt = await rebuild_one(
                    self.consumer,
                    self._db,
                    self._config.batch_size,
                    advance,
                    keep_before_poison=True,
                    copy=copy,
                    parking=self._parking,
                )
        PROJECTION_REBUILDS.labels(*projection_labels(self.name)).inc()
        log.log(
            level,
            "%s: built from the event log and switched in at %s in %.2fs",
            self.name,
            rebuilt.position,
            time.monotonic() - started,
        )
        self.checkpoint = rebuilt.position
        if rebuilt.poison is not None:
            await self._poison(rebuilt.poison.event, rebuilt.poison)
            return True
        return False

    async def _park(self, event: StoredEvent, exc: BaseException) -> bool:
        """Park ``event``'s aggregate (the ``park`` policy); False: stop on it instead."""
        return self._parking is not None and await self._parking.park(event, exc)

    async def _unpark(self, parked: Parked, at: Position) -> None:
        """Serve an unpark request: re-project what the aggregate makes at ``at`` (the
        checkpoint, between two batches), then stop leaving its events out."""
        parking = self._parking
        assert parking is not None and isinstance(self.consumer, Replayable)
        what = f"{parked.aggregate_type} {parked.aggregate_id}"
        try:
            changed = await self.consumer.replay(
                parked.aggregate_type, parked.aggregate_id, at, self._db
            )
        except CheckpointMoved as exc:
            if isinstance(exc, StoreLost):
                raise
            log.info("%s: unpark of %s waits: %s", self.name, what, exc)
            return  # the next batch reloads the checkpoint; the request stays
        except PoisonEvent as exc:
            log.warning(
                "%s: %s stays parked: its events are still refused: %s", self.name, what, exc
            )
            await parking.refused(parked, str(exc))
            return
        await parking.released(parked)
        log.info(
            "%s: unparked %s: %d document(s) re-projected from its history up to %s",
            self.name,
            what,
            changed,
            at,
        )

    async def _apply_before(self, batch: Batch, poison: StoredEvent) -> None:
        started = time.perf_counter()
        applied = await apply_before(self.consumer, batch, poison)
        if applied is not None:
            self.checkpoint = applied.next
            await self._observe(applied, time.perf_counter() - started)

    async def _observe(self, batch: Batch, seconds: float) -> None:
        """The metrics of a committed batch that took ``seconds`` to apply."""
        if batch.events:
            PROJECTION_APPLIED.labels(*projection_labels(self.name)).inc(len(batch.events))
            PROJECTION_POSITION.labels(*projection_labels(self.name)).set(
                max(e.seq for e in batch.events)
            )
            self._batch_events.observe(len(batch.events))
            self._batch_seconds.observe(seconds)
            if batch.recorded_at is not None:
                # Freshness, on this host's clock against the database's (keep them synced).
                age = (datetime.now(UTC) - batch.recorded_at).total_seconds()
                self._delay.observe(max(age, 0.0))
        if not batch.full:
            self.lag_events = 0
            PROJECTION_LAG.labels(*projection_labels(self.name)).set(0)
            PROJECTION_LAG_SECONDS.labels(*projection_labels(self.name)).set(0)
        elif time.monotonic() - self._lag_at >= _LAG_EVERY_S:
            # Counting a backlog costs O(backlog): sample it, don't do it every batch.
            self._lag_at = time.monotonic()
            lag = await behind(
                self._db, batch.next, self.consumer.consumes, COUNT_CAP, self.consumer.event_types
            )
            self.lag_events = lag.events
            PROJECTION_LAG.labels(*projection_labels(self.name)).set(lag.events)
            PROJECTION_LAG_SECONDS.labels(*projection_labels(self.name)).set(lag.seconds)

    async def _lag_while_retrying(self) -> None:
        """While a batch keeps failing the checkpoint stands still and nothing observes
        the backlog: count it here (sampled), so the lag alerts see a stuck consumer — an
        order waiting for its charge is lag like any other unapplied event."""
        if self.checkpoint is None or time.monotonic() - self._lag_at < _LAG_EVERY_S:
            return
        self._lag_at = time.monotonic()
        try:
            lag = await behind(
                self._db,
                self.checkpoint,
                self.consumer.consumes,
                COUNT_CAP,
                self.consumer.event_types,
            )
        except Exception as exc:  # the database may be what is failing
            raise_if_cancelled()
            log.debug("%s: lag not counted: %s", self.name, exc)
            return
        self.lag_events = lag.events
        PROJECTION_LAG.labels(*projection_labels(self.name)).set(lag.events)
        PROJECTION_LAG_SECONDS.labels(*projection_labels(self.name)).set(lag.seconds)

    def _forget_lag(self) -> None:
        """Out of leadership this process no longer knows the lag: drop its series, so a
        stale figure never outlives the lease (the leader's process exports the lag)."""
        for gauge in (PROJECTION_LAG, PROJECTION_LAG_SECONDS):
            with contextlib.suppress(KeyError):
                gauge.remove(*projection_labels(self.name))

    async def _poison(self, event: StoredEvent, exc: BaseException) -> None:
        log.error(
            "%s: STOPPED on poison event seq=%d (%s %s v%d); other projections continue; "
            "fix the cause and restart the projector to retry",
            self.name,
            event.seq,
            event.event_type,
            event.aggregate_id,
            event.aggregate_version,
            exc_info=exc,
        )
        PROJECTION_FAILED.labels(*projection_labels(self.name)).set(1)
        self.state = "stopped-on-poison"
        try:
            await self._failures.record(
                self.name, event.seq, event.event_type, f"{type(exc).__name__}: {exc}"
            )
        except Exception:
            log.exception("%s: could not record the failure", self.name)


class _Applied:
    """Counts the events a rebuild applies under the consumer's own name."""

    def __init__(self, name: str) -> None:
        self._counter = PROJECTION_APPLIED.labels(*projection_labels(name))

    def advance(self, n: int) -> None:
        self._counter.inc(n)


class _Chase:
    """When to look again after a read that was not full. A NOTIFY whose event a read did
    not bring may be above the horizon, held there by an older transaction that notifies
    nobody when it ends (another database's, a read model's write, an order-number block):
    then look again soon, doubling, up to the poll interval, once per NOTIFY."""

    def __init__(self) -> None:
        self._retry = 0.0  # > 0: chasing, next look this soon
        self._chased = -1  # the wakeup generation last chased (-1: none, so the first look)

    def wait(self, seen: int, batch: Batch, poll_interval: float) -> float:
        """Seconds to wait after ``batch``, read with the wakeup at generation ``seen``."""
        if batch.events:
            self._retry, self._chased = 0.0, seen
        elif self._retry:
            self._retry *= 2
        elif seen > self._chased:
            self._retry, self._chased = _HELD_RETRY_S, seen
        if not 0 < self._retry < poll_interval:
            self._retry = 0.0
            return poll_interval
        return self._retry
