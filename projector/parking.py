"""Parked aggregates: one bad event sets its aggregate aside instead of stopping a consumer.

A projection whose policy is ``park`` (``CQRS_PROJECTOR_PARK``; ``stop``, the default,
stops the whole consumer as :mod:`projector.runner` describes) answers a poison event by
recording its aggregate in ``read.parked_aggregates`` *from that event on*, then applies
the same batch again without that aggregate's events from there. Every later batch leaves
them out too (the aggregate's document stays as it was before the event, in order), and
every other aggregate goes on. The row is written before the checkpoint passes the event,
so a crash in between parks it again from the same event (an upsert): nothing is skipped
unrecorded.

The row is the consumer's, not one copy's or segment's (its base name): a rebuild's copy
and every segment leave the same events out, so what ``parked from p`` means holds across
a switch. A segment that applied some of them first (the row came from another segment,
e.g. a customer's event that one segment's orders could not take) is harmless: a replay
re-projects whole documents, it never applies an event on top of a document.

``cqrs projector unpark <consumer> [aggregate]`` marks rows; the runner of each segment,
between two batches, re-projects the documents the aggregate makes (its own, or those
showing it: an order shows its customer's contact) from the aggregate's whole history up
to its checkpoint, through today's reducers (:meth:`Projection.replay`), writes them with
its checkpoint as both the expected and the new one (the audit's repair: a compare-and-set
that leaves the checkpoint where it is), then adds itself to ``released``; the row goes
when every segment has. A crash in between replays again: re-projecting is idempotent. If
the reducers still refuse an event, the row stays, with ``unpark_error``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Protocol, runtime_checkable

import asyncpg

from common.event_log import Executor
from common.events import StoredEvent
from common.metrics import PROJECTION_PARKED, PROJECTION_PARKS
from common.positions import Position
from projector.consumer import Consumer
from projector.errors import PoisonEvent
from projector.outbox import Batch
from projector.projections import ALL_PROJECTIONS
from projector.segments import SplitConsumer, all_segments, base_name

log = logging.getLogger(__name__)

_TABLE = "read.parked_aggregates"
_MAX_ERROR = 2000
REFRESH_S = 1.0  # how often a runner reads its rows (unpark requests, other segments' parks)


@dataclass(frozen=True, slots=True)
class Parked:
    """One parked aggregate of one consumer."""

    consumer: str
    aggregate_type: str
    aggregate_id: str
    since: Position  # the first event left out
    event_type: str
    event_version: int
    error: str
    parked_at: datetime
    released: tuple[str, ...] = ()
    unpark_requested: bool = False
    unpark_error: str | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.aggregate_type, self.aggregate_id)


@runtime_checkable
class Replayable(Protocol):
    """A consumer that can re-project what one aggregate makes (the projections)."""

    async def replay(
        self, aggregate_type: str, aggregate_id: str, at: Position, db: Executor
    ) -> int:
        """Re-project, from the log up to ``at`` (its checkpoint, left where it is), the
        documents the aggregate makes; how many changed. ``PoisonEvent`` if an event is
        still refused, ``CheckpointMoved`` if the checkpoint is no longer ``at``."""
        ...


class ParkedBook:
    """``read.parked_aggregates``: records, lists and releases parked aggregates."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def park(self, runner: str, event: StoredEvent, error: str) -> None:
        """Park ``event``'s aggregate for ``runner``'s consumer from ``event`` on (or from
        an earlier position if it is parked already); ``runner`` must replay it again."""
        await self._pool.execute(
            f"INSERT INTO {_TABLE} AS p (consumer, aggregate_type, aggregate_id, from_xid, "
            "from_seq, event_type, event_version, error) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) "
            "ON CONFLICT (consumer, aggregate_type, aggregate_id) DO UPDATE SET "
            "released = array_remove(p.released, $9), unpark_requested_at = NULL, "
            "error = EXCLUDED.error, "
            # The earliest of the two: what was left out from the first stays out.
            "(from_xid, from_seq, event_type, event_version) = (SELECT * FROM (VALUES "
            "(p.from_xid, p.from_seq, p.event_type, p.event_version), "
            "(EXCLUDED.from_xid, EXCLUDED.from_seq, EXCLUDED.event_type, "
            "EXCLUDED.event_version)) v(x, s, t, n) ORDER BY x, s LIMIT 1)",
            base_name(runner),
            event.aggregate_type,
            event.aggregate_id,
            event.xid,
            event.seq,
            event.event_type,
            event.aggregate_version,
            error[:_MAX_ERROR],
            runner,
        )

    async def of(self, consumer: str) -> dict[tuple[str, str], Parked]:
        """The parked aggregates of ``consumer`` (a base name), by (type, id)."""
        rows = await self._pool.fetch(f"SELECT * FROM {_TABLE} WHERE consumer = $1", consumer)
        return {p.key: p for p in map(_parked, rows)}

    async def all(self) -> list[Parked]:
        """Every parked aggregate, oldest first."""
        rows = await self._pool.fetch(f"SELECT * FROM {_TABLE} ORDER BY parked_at, consumer")
        return [_parked(r) for r in rows]

    async def request_unpark(self, consumer: str, aggregate_id: str | None = None) -> int:
        """Ask the runners of ``consumer`` to replay its parked aggregates (one, or all);
        how many rows were marked."""
        status = await self._pool.execute(
            f"UPDATE {_TABLE} SET unpark_requested_at = now(), unpark_error = NULL "
            "WHERE consumer = $1 AND ($2::text IS NULL OR aggregate_id = $2)",
            consumer,
            aggregate_id,
        )
        return int(status.split()[-1])

    async def release(self, runner: str, parked: Parked, runners: Iterable[str]) -> None:
        """``runner`` replayed ``parked``: it no longer leaves its events out; the row goes
        once every one of ``runners`` (the consumer's segments) has."""
        async with self._pool.acquire() as conn, conn.transaction():
            released = await conn.fetchval(
                f"UPDATE {_TABLE} SET released = array_append(array_remove(released, $4), $4) "
                "WHERE consumer = $1 AND aggregate_type = $2 AND aggregate_id = $3 "
                "RETURNING released",
                parked.consumer,
                parked.aggregate_type,
                parked.aggregate_id,
                runner,
            )
            if released is not None and set(runners) <= set(released):
                await conn.execute(
                    f"DELETE FROM {_TABLE} "
                    "WHERE consumer = $1 AND aggregate_type = $2 AND aggregate_id = $3",
                    parked.consumer,
                    parked.aggregate_type,
                    parked.aggregate_id,
                )

    async def unpark_failed(self, parked: Parked, error: str) -> None:
        """The replay was refused again: the aggregate stays parked, the request ends."""
        await self._pool.execute(
            f"UPDATE {_TABLE} SET unpark_requested_at = NULL, unpark_error = $4 "
            "WHERE consumer = $1 AND aggregate_type = $2 AND aggregate_id = $3",
            parked.consumer,
            parked.aggregate_type,
            parked.aggregate_id,
            error[:_MAX_ERROR],
        )

    async def forget_releases(self, consumer: str) -> None:
        """A rebuild of ``consumer`` begins: its copy leaves out every parked aggregate's
        events, so no segment may count as having replayed one (they replay again)."""
        await self._pool.execute(
            f"UPDATE {_TABLE} SET released = '{{}}' WHERE consumer = $1", consumer
        )


class Parking:
    """What one runner (a consumer, or a segment of one) knows of its parked aggregates."""

    def __init__(self, book: ParkedBook, runner: str, runners: Sequence[str]) -> None:
        self.book = book
        self.runner = runner
        self.consumer = base_name(runner)
        self._runners = tuple(runners)  # every segment of the consumer (itself if unsplit)
        self._parked: dict[tuple[str, str], Parked] = {}
        self._read_at = float("-inf")
        self._gauge = PROJECTION_PARKED.labels(self.consumer)
        self._last_seq: int | None = None  # the event that parked last

    @property
    def parked(self) -> dict[tuple[str, str], Parked]:
        return self._parked

    def holds_back(self, event: StoredEvent) -> bool:
        """Whether this runner leaves ``event`` out (its aggregate is parked from it on)."""
        parked = self._parked.get((event.aggregate_type, event.aggregate_id))
        return (
            parked is not None
            and event.position >= parked.since
            and self.runner not in parked.released
        )

    def filter(self, batch: Batch) -> Batch:
        """``batch`` without the events this runner leaves out (start and next unchanged:
        the checkpoint passes them, their row says where they are)."""
        if not self._parked:
            return batch
        kept = [e for e in batch.events if not self.holds_back(e)]
        return batch if len(kept) == len(batch.events) else replace(batch, events=kept)

    async def refresh(self, *, force: bool = False) -> list[Parked]:
        """Read the rows again (at most every ``REFRESH_S`` unless ``force``); the ones
        with an unpark request this runner has not served yet."""
        now = time.monotonic()
        if not force and now - self._read_at < REFRESH_S:
            return []
        self._read_at = now
        self._parked = await self.book.of(self.consumer)
        self._gauge.set(len(self._parked))
        return [
            p for p in self._parked.values() if p.unpark_requested and self.runner not in p.released
        ]

    async def park(self, event: StoredEvent, exc: BaseException) -> bool:
        """Record ``event``'s aggregate as parked from it on, and leave it out from now;
        False (nothing done) if ``event`` is the one that parked last: refused again once
        its aggregate is set aside, it is not the aggregate's fault (stop on it)."""
        if event.seq == self._last_seq:
            return False
        self._last_seq = event.seq
        error = reason(exc)
        await self.book.park(self.runner, event, error)
        PROJECTION_PARKS.labels(self.consumer).inc()
        log.warning(
            "%s: PARKED %s %s at event seq=%d (%s v%d): %s; its later events are set aside, "
            "every other aggregate goes on; after a fix `cqrs projector unpark %s %s` "
            "replays it",
            self.runner,
            event.aggregate_type,
            event.aggregate_id,
            event.seq,
            event.event_type,
            event.aggregate_version,
            error,
            self.consumer,
            event.aggregate_id,
        )
        await self.refresh(force=True)
        return True

    async def released(self, parked: Parked) -> None:
        await self.book.release(self.runner, parked, self._runners)
        await self.refresh(force=True)

    async def refused(self, parked: Parked, error: str) -> None:
        await self.book.unpark_failed(parked, error)
        await self.refresh(force=True)


def _parked(row: asyncpg.Record) -> Parked:
    return Parked(
        consumer=row["consumer"],
        aggregate_type=row["aggregate_type"],
        aggregate_id=row["aggregate_id"],
        since=Position(row["from_xid"], row["from_seq"]),
        event_type=row["event_type"],
        event_version=row["event_version"],
        error=row["error"],
        parked_at=row["parked_at"],
        released=tuple(row["released"]),
        unpark_requested=row["unpark_requested_at"] is not None,
        unpark_error=row["unpark_error"],
    )


def reason(exc: BaseException) -> str:
    """Why an event parked: a poison event's own words, else the error's type and words."""
    return str(exc) if isinstance(exc, PoisonEvent) else f"{type(exc).__name__}: {exc}"


def parking_for(consumer: Consumer, pool: asyncpg.Pool, policy_text: str) -> Parking | None:
    """The parking of ``consumer`` (a consumer or one segment of it) if the policy
    (``CQRS_PROJECTOR_PARK``'s text) parks it, else ``None`` (it stops on a poison event)."""
    base = base_name(consumer.name)
    if base not in parse_policy(policy_text) or not isinstance(consumer, Replayable):
        return None
    split = consumer.split if isinstance(consumer, SplitConsumer) else None
    runners = (
        [consumer.name]
        if split is None
        else [s.name(base) for s in all_segments(split.segment.count)]
    )
    return Parking(ParkedBook(pool), consumer.name, runners)


def parse_policy(text: str, parkable: Iterable[str] = ALL_PROJECTIONS) -> frozenset[str]:
    """``CQRS_PROJECTOR_PARK``: the consumers (base names, comma separated; ``*`` = every
    projection) whose poison events park their aggregate; ``ValueError`` for one that
    cannot (not a projection: a fold or an outbound consumer keeps ``stop``)."""
    parkable = list(parkable)
    names = {p.strip() for p in text.split(",") if p.strip()}
    if "*" in names:
        return frozenset(parkable)
    refused = sorted(names - set(parkable))
    if refused:
        raise ValueError(
            f"CQRS_PROJECTOR_PARK: {', '.join(refused)} cannot park an aggregate; only the "
            f"projections can ({', '.join(parkable)})"
        )
    return frozenset(names)
