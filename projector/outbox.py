"""Reading the event log in commit-safe ``(xid, seq)`` order (see docs/ARCHITECTURE.md).

One statement, hence one snapshot, returns both the horizon (the snapshot's
``xmin``: every transaction below it has finished) and the next events below it.
Nothing can appear later below the horizon, so once a batch is not full the
reader has seen everything up to ``(xmin, 0)`` and the checkpoint may jump there.
Payloads come out upcast to their current schema (``common.event_log``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from common.event_log import EVENT_COLUMNS, stored_event
from common.events import StoredEvent
from common.positions import Position

_READ = f"""
WITH h AS (SELECT pg_snapshot_xmin(pg_current_snapshot()) AS xmin)
SELECT h.xmin::text::bigint AS horizon, e.* FROM h LEFT JOIN LATERAL (
  SELECT {EVENT_COLUMNS}
  FROM events v
  WHERE (v.xid, v.seq) > ($1::bigint::text::xid8, $2::bigint)
    AND v.xid < h.xmin AND v.aggregate_type = ANY($3::text[])
    AND ($5::text[] IS NULL OR v.event_type = ANY($5::text[]))
  -- The table's columns (not the bigint output alias), so the (xid, seq) index gives the order.
  ORDER BY v.xid, v.seq LIMIT $4) e ON true
"""

# Committed (visible) events after a position; LIMIT bounds the cost of a huge backlog.
_COUNT_AFTER = """
SELECT count(*) FROM (
  SELECT 1 FROM events
  WHERE (xid, seq) > ($1::bigint::text::xid8, $2::bigint) AND aggregate_type = ANY($3::text[])
    AND ($5::text[] IS NULL OR event_type = ANY($5::text[]))
  LIMIT $4) e
"""

_HEAD = "SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint"


class Executor(Protocol):
    """asyncpg's query methods: a pool, or a connection (e.g. inside a transaction)."""

    async def fetch(self, query: str, *args: Any) -> list[Any]: ...

    async def fetchval(self, query: str, *args: Any) -> Any: ...


@dataclass(frozen=True, slots=True)
class Batch:
    """Events read after ``start`` and the checkpoint to store once they are applied."""

    start: Position
    events: list[StoredEvent]
    next: Position
    full: bool  # more events may follow right away

    @property
    def moved(self) -> bool:
        """Whether committing this batch changes anything (events or the checkpoint)."""
        return bool(self.events) or self.next != self.start


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
    if limit < 1:
        raise ValueError("limit must be positive")
    wanted = None if event_types is None else list(event_types)
    rows = await db.fetch(_READ, after.xid, after.seq, list(types), limit, wanted)
    horizon = int(rows[0]["horizon"])
    events = [stored_event(r) for r in rows if r["seq"] is not None]
    full = len(events) == limit
    nxt = events[-1].position if full else Position(horizon, 0)
    # The horizon never goes backwards, but a checkpoint written by another reader
    # (e.g. a rebuild) may be ahead of this snapshot: never move behind it.
    return Batch(after, events, max(nxt, after), full)


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
    return int(await db.fetchval(_COUNT_AFTER, after.xid, after.seq, list(types), cap, wanted))


async def head(db: Executor) -> Position:
    """The current horizon as a position: everything before it has committed or aborted."""
    return Position(int(await db.fetchval(_HEAD)), 0)
