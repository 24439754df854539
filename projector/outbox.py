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

from common.event_log import EVENT_COLUMNS, Executor, commit_safe_read, continue_at, stored_event
from common.events import StoredEvent
from common.positions import Position

# A consumer's events: of the aggregate types $4, and only the event types $5 unless NULL.
_CONSUMED = (
    "v.aggregate_type = ANY($4::text[]) AND ($5::text[] IS NULL OR v.event_type = ANY($5::text[]))"
)
_READ = commit_safe_read(EVENT_COLUMNS, _CONSUMED)

# Committed (visible) events after a position; LIMIT bounds the cost of a huge backlog.
_COUNT_AFTER = f"""
SELECT count(*) FROM (
  SELECT 1 FROM events v
  WHERE (v.xid, v.seq) > ($1::bigint::text::xid8, $2::bigint) AND {_CONSUMED}
  LIMIT $3) e
"""

_HEAD = "SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint"


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
    rows = await db.fetch(_READ, after.xid, after.seq, limit, list(types), wanted)
    events = [stored_event(r) for r in rows if r["seq"] is not None]
    nxt = continue_at(after, events, limit, int(rows[0]["horizon"]))
    return Batch(after, events, nxt, len(events) == limit)


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


async def head(db: Executor) -> Position:
    """The current horizon as a position: everything before it has committed or aborted."""
    return Position(int(await db.fetchval(_HEAD)), 0)
