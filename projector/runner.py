"""The runner of one projection: lead, read a batch, reduce, commit, repeat.

Loop (while holding the projection's advisory lock, see :mod:`leadership`):
re-check the lock, read up to ``projector_batch_size`` events after the
checkpoint in commit-safe order (:mod:`outbox`), reduce them against the
documents loaded in one round trip (:mod:`batch`), and commit documents and the
new checkpoint atomically with a compare-and-set. A full batch is followed at
once; otherwise the runner sleeps until a NOTIFY (a hint) or the poll interval
(the truth). If the compare-and-set fails (a rebuild switched the projection, or
another runner got in) the runner reloads the checkpoint and goes on.

Failures:

- Unavailable PostgreSQL/Redis (:func:`projector.transient.is_transient`) and
  other errors not attributable to an event: log, back off, retry; leadership is
  kept unless its connection is gone.
- A *poison event* (its reducer raises, or the store rejects applying it): this
  projection stops, the others keep running. We chose stopping over skipping
  because a skipped event silently corrupts the read model forever, while a
  stopped one is visible and recoverable: an ERROR log, the gauge
  ``cqrs_projection_failed{projection}`` = 1 and a row in
  ``read.projection_failures`` (see ``cqrs projector status``). Everything before
  the poison event is committed (a batch whose commit fails is retried one event
  at a time to find it). The runner gives up its lock, so a hot standby (if any)
  retries once and stops the same way. Restarting the projector retries the
  event; the row is cleared by the first successful commit after that.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from dataclasses import dataclass

from common.events import StoredEvent
from common.metrics import (
    PROJECTION_APPLIED,
    PROJECTION_FAILED,
    PROJECTION_LAG,
    PROJECTION_POSITION,
)
from common.positions import Position
from projector.batch import reduce_batch
from projector.errors import LeadershipLost, ReducerError
from projector.failures import FailureLog
from projector.leadership import AdvisoryLease
from projector.outbox import Batch, Executor, count_after, read_batch
from projector.projections import ProjectionKind
from projector.stores.port import CheckpointMoved, ProjectionStore
from projector.transient import is_transient
from projector.wakeup import Wakeup, sleep_unless, wait_ticket

log = logging.getLogger(__name__)

_LAG_EVERY_S = 1.0
_HEALTHY_RUN_S = 60.0
_LAG_CAP = 10_000_000


class Outcome(enum.Enum):
    """Why :meth:`ProjectionRunner.run` returned."""

    STOPPED = "stopped"  # asked to stop
    FAILED = "failed"  # stopped on a poison event


@dataclass(frozen=True, slots=True)
class RunnerConfig:
    batch_size: int
    poll_interval: float  # seconds
    retry_interval: float = 1.0  # first back-off after an error (doubles up to 30 s)


class ProjectionRunner:
    """Keeps one projection (one store) up to date with the event log."""

    def __init__(
        self,
        *,
        kind: ProjectionKind,
        store: ProjectionStore,
        db: Executor,
        lease: AdvisoryLease,
        failures: FailureLog,
        wakeup: Wakeup,
        config: RunnerConfig,
    ) -> None:
        self.kind = kind
        self.store = store
        self.name = store.name
        self._db = db
        self._lease = lease
        self._failures = failures
        self._wakeup = wakeup
        self._config = config
        self._lag_at = 0.0
        self.checkpoint: Position | None = None  # last committed/loaded (observability)

    async def run(self, stop: asyncio.Event) -> Outcome:
        """Lead (or stand by) and follow the log until ``stop`` is set or a poison event."""
        PROJECTION_FAILED.labels(self.name).set(0)
        while not stop.is_set():
            if not await self._lease.acquire(stop):
                break
            try:
                if await self._lead(stop):
                    return Outcome.FAILED
            except LeadershipLost:
                log.warning("%s: lost the runner lock; standing by", self.name)
            finally:
                await self._lease.release()
        return Outcome.STOPPED

    async def _lead(self, stop: asyncio.Event) -> bool:
        """Follow while leading; True if stopped on a poison event."""
        backoff = self._config.retry_interval
        while not stop.is_set():
            started = time.monotonic()
            try:
                return await self._follow(stop)
            except LeadershipLost:
                raise
            except Exception as exc:
                if time.monotonic() - started > _HEALTHY_RUN_S:
                    backoff = self._config.retry_interval  # a new incident, not a repeat
                if is_transient(exc):
                    log.warning("%s: %s; retrying in %.1fs", self.name, exc, backoff)
                else:
                    log.exception("%s: unexpected error; retrying in %.1fs", self.name, backoff)
                await sleep_unless(stop, backoff)
                backoff = min(backoff * 2, 30.0)
                await self._lease.check()
        return False

    async def _follow(self, stop: asyncio.Event) -> bool:
        store, kind = self.store, self.kind
        await store.initialize()
        checkpoint = await store.checkpoint()
        self.checkpoint = checkpoint
        failure_pending = await self._failures.get(self.name) is not None
        careful_until: Position | None = None  # retry one event at a time up to here
        log.info("%s: following from %s", self.name, checkpoint)
        while not stop.is_set():
            ticket = self._wakeup.ticket()
            await self._lease.check()
            careful = careful_until is not None and checkpoint < careful_until
            limit = 1 if careful else self._config.batch_size
            batch = await read_batch(self._db, checkpoint, kind.consumes, limit)
            if batch.moved:
                try:
                    changes = await reduce_batch(kind, store, batch.events)
                except ReducerError as exc:
                    await self._commit_before(checkpoint, batch, exc.event)
                    await self._poison(exc.event, exc)
                    return True
                try:
                    await store.commit(checkpoint, batch.next, changes)
                except CheckpointMoved as exc:
                    checkpoint = await store.checkpoint()
                    self.checkpoint = checkpoint
                    log.info("%s: %s; continuing from %s", self.name, exc, checkpoint)
                    continue
                except Exception as exc:
                    if is_transient(exc) or not batch.events:
                        raise
                    if len(batch.events) == 1:
                        await self._poison(batch.events[0], exc)
                        return True
                    log.warning(
                        "%s: batch commit failed (%s); retrying its events one by one",
                        self.name,
                        exc,
                    )
                    careful_until = batch.events[-1].position
                    continue
                checkpoint = batch.next
                self.checkpoint = checkpoint
                if batch.events and failure_pending:
                    failure_pending = False
                    await self._failures.clear(self.name)
                    log.info("%s: recovered from the recorded failure", self.name)
                await self._observe(batch)
            if not batch.full:
                await wait_ticket(ticket, self._config.poll_interval)
        return False

    async def _commit_before(self, checkpoint: Position, batch: Batch, poison: StoredEvent) -> None:
        """Commit the events of ``batch`` that precede ``poison``, so the projection stops
        right before it (and a restart begins with it)."""
        index = next(i for i, e in enumerate(batch.events) if e is poison)
        if index == 0:
            return
        before = batch.events[:index]
        changes = await reduce_batch(self.kind, self.store, before)
        await self.store.commit(checkpoint, before[-1].position, changes)
        self.checkpoint = before[-1].position
        await self._observe(Batch(checkpoint, before, before[-1].position, full=True))

    async def _observe(self, batch: Batch) -> None:
        if batch.events:
            PROJECTION_APPLIED.labels(self.name).inc(len(batch.events))
            PROJECTION_POSITION.labels(self.name).set(max(e.seq for e in batch.events))
        if not batch.full:
            PROJECTION_LAG.labels(self.name).set(0)
        elif time.monotonic() - self._lag_at >= _LAG_EVERY_S:
            # Counting a backlog costs O(backlog): sample it, don't do it every batch.
            self._lag_at = time.monotonic()
            lag = await count_after(self._db, batch.next, self.kind.consumes, _LAG_CAP)
            PROJECTION_LAG.labels(self.name).set(lag)

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
        PROJECTION_FAILED.labels(self.name).set(1)
        try:
            await self._failures.record(
                self.name, event.seq, event.event_type, f"{type(exc).__name__}: {exc}"
            )
        except Exception:
            log.exception("%s: could not record the failure", self.name)
