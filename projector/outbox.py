"""Reading the event log in commit-safe ``(xid, seq)`` order (see docs/ARCHITECTURE.md).

One statement, hence one snapshot, returns both the horizon (the snapshot's
``xmin``: every transaction below it has finished) and the next events below it.
Nothing can appear later below the horizon, so once a batch is not full the
reader has seen everything up to ``(xmin, 0)`` and the checkpoint may jump there.
Payloads come out upcast to their current schema (``common.event_log``).

How far behind a consumer is (:func:`behind`) is measured in events and in seconds
from ``recorded_at`` (when the write side stored the event, database clock), never from
``occurred_at``, which is application time (back-dated by the seeder).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from common.event_log import (
    EVENT_COLUMNS,
    Executor,
    commit_safe_read,
    continue_at,
    count_after_statement,
    stored_event,
)
from common.events import StoredEvent
from common.positions import Position

# A consumer's events: of the aggregate types $4, and only the event types $5 unless NULL.
_CONSUMED = (
    "v.aggregate_type = ANY($4::text[]) AND ($5::text[] IS NULL OR v.event_type = ANY($5::text[]))"
)
_READ = commit_safe_read(f"{EVENT_COLUMNS}, v.recorded_at", _CONSUMED)

# Committed (visible) events after a position; LIMIT bounds the cost of a huge backlog.
_COUNT_AFTER = count_after_statement(_CONSUMED)

# The same count, and the age of the first of those events in commit-safe order (both
# on the database's clock, like recorded_at): one round trip.
_BEHIND = f"""
SELECT ({_COUNT_AFTER}) AS events, (
  SELECT greatest(extract(epoch FROM clock_timestamp() - v.recorded_at), 0)::float8
  FROM events v
  WHERE (v.xid, v.seq) > ($1::bigint::text::xid8, $2::bigint) AND {_CONSUMED}
  ORDER BY v.xid, v.seq LIMIT 1) AS seconds
"""

_HEAD = "SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint"


@dataclass(frozen=True, slots=True)
class Batch:
    """Events read after ``start`` and the checkpoint to store once they are applied."""

    start: Position
    events: list[StoredEvent]
    next: Position
    full: bool  # more events may follow right away
    recorded_at: datetime | None = None  # when its newest event was stored (None: no events)

    @property
    def moved(self) -> bool:
        """Whether committing this batch changes anything (events or the checkpoint)."""
        return bool(self.events) or self.next != self.start

    def then(self, more: Batch) -> Batch:
        """This batch and ``more``, the one read right after it, as one."""
        if more.start != self.next:
            raise ValueError(f"{more.start} does not follow {self.next}")
        stamps = [t for t in (self.recorded_at, more.recorded_at) if t is not None]
        return Batch(
            self.start, self.events + more.events, more.next, more.full, max(stamps, default=None)
        )


async def read_batch(
    db: Executor,
    after: Position,
    types: Sequence[str],
    limit: int,
    event_types: Sequence[str] | None = None,
) -> Batch:
    """Up to ``limit`` events of ``types`` (aggregate types; only ``event_types`` of them if
    given) after ``after`` in ``(xid, seq)`` order, below the horizon. ``db`` is a pool or a
    connection (e.g. one inside a transaction)."""
    read = await read_log(db, after, types, limit, event_types)
    return read.batch()


@dataclass(frozen=True, slots=True)
class LogRead:
    """One commit-safe read of the log: the events (each with when it was stored) after
    ``start``, and where the next read begins. The stretch ``start``..``next`` holds no
    other event of the read's filter, so any narrower filter of it is a batch too
    (:meth:`batch`): what :mod:`projector.feed` shares between consumers."""

    start: Position
    events: list[StoredEvent]
    recorded_at: list[datetime]  # one per event
    next: Position
    full: bool

    def batch(self, keep: Callable[[StoredEvent], bool] | None = None) -> Batch:
        """The batch of the events ``keep`` selects (all if ``None``), with the same
        ``start``, ``next`` and ``full``."""
        if keep is None:  # a read of one consumer's own filter (catch-ups): no copy
            return Batch(
                self.start, self.events, self.next, self.full, max(self.recorded_at, default=None)
            )
        events: list[StoredEvent] = []
        newest: datetime | None = None
        for event, recorded in zip(self.events, self.recorded_at, strict=True):
            if keep(event):
                events.append(event)
                newest = recorded if newest is None else max(newest, recorded)
        return Batch(self.start, events, self.next, self.full, newest)


async def read_log(
    db: Executor,
    after: Position,
    types: Sequence[str],
    limit: int,
    event_types: Sequence[str] | None = None,
) -> LogRead:
    """The read behind :func:`read_batch` (same arguments), every event kept."""
    if limit < 1:
        raise ValueError("limit must be positive")
    wanted = None if event_types is None else list(event_types)
    rows = await db.fetch(_READ, after.xid, after.seq, limit, list(types), wanted)
    found = [r for r in rows if r["seq"] is not None]
    events = [stored_event(r) for r in found]
    nxt = continue_at(after, events, limit, int(rows[0]["horizon"]))
    recorded = [r["recorded_at"] for r in found]
    return LogRead(after, events, recorded, nxt, len(events) == limit)


async def count_after(
    db: Executor,
    after: Position,
    types: Sequence[str],
    cap: int,
    event_types: Sequence[str] | None = None,
) -> int:
    """Committed events of ``types`` (and ``event_types``, if given) after ``after`` (at
    most ``cap``)."""
    wanted = None if event_types is None else list(event_types)
    return int(await db.fetchval(_COUNT_AFTER, after.xid, after.seq, cap, list(types), wanted))


@dataclass(frozen=True, slots=True)
class Behind:
    """How far a consumer at some position is behind the log."""

    events: int  # committed events after it (at most the cap)
    seconds: float  # age of the first of them (recorded_at); 0 when there is none


async def behind(
    db: Executor,
    after: Position,
    types: Sequence[str],
    cap: int,
    event_types: Sequence[str] | None = None,
) -> Behind:
    """:func:`count_after`, and how long ago the first event after ``after`` (in
    commit-safe order) was recorded."""
    wanted = None if event_types is None else list(event_types)
    (row,) = await db.fetch(_BEHIND, after.xid, after.seq, cap, list(types), wanted)
    return Behind(int(row["events"]), float(row["seconds"] or 0.0))


async def head(db: Executor) -> Position:
    """The current horizon as a position: everything before it has committed or aborted."""
    return Position(int(await db.fetchval(_HEAD)), 0)
