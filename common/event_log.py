"""Reading rows of the ``events`` table: every reader goes through :func:`stored_event`
(or :func:`logged_event`), so every reader sees payloads in the current schema
(``common.upcasting``). Also the reads of one aggregate's events that the read
server's history and time travel and the ``cqrs events`` CLI share, and the commit-safe
tail of the log the CLI follows.

These read the event table itself, the truth: no projection, no consistency token (a
command's events are visible once it has replied).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import asyncpg
import orjson

from common.events import UNREADABLE_PAYLOAD, StoredEvent
from common.positions import Position
from common.upcasting import UpcastError, upcast

# The columns :func:`stored_event` needs, for a SELECT from ``events`` (alias ``v``).
EVENT_COLUMNS = (
    "v.seq, v.xid::text::bigint AS xid, v.aggregate_type, v.aggregate_id::text AS aggregate_id, "
    "v.aggregate_version, v.event_type, v.schema_version, v.payload::text AS payload, "
    "v.occurred_at"
)


class Executor(Protocol):
    """asyncpg's query methods: a pool, or a connection (e.g. inside a transaction)."""

    async def fetch(self, query: str, *args: Any) -> list[Any]: ...

    async def fetchval(self, query: str, *args: Any) -> Any: ...


def parse_json(text: str) -> Any:
    """The stored JSON text as Python values."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:  # e.g. an integer beyond 64 bits, which jsonb allows
        return json.loads(text)


def current_payload(event_type: str, schema_version: int, stored: Any) -> dict[str, Any]:
    """``stored`` (a parsed payload of ``schema_version``) in the current schema, or
    ``{UNREADABLE_PAYLOAD: why}`` when it is not an object or cannot be upcast: the
    reducers then reject the event rather than read a shape they do not know."""
    if not isinstance(stored, dict):
        return {UNREADABLE_PAYLOAD: f"payload is not a JSON object: {stored!r:.100}"}
    try:
        return upcast(event_type, schema_version, stored)
    except UpcastError as exc:
        return {UNREADABLE_PAYLOAD: str(exc)}


def stored_event(row: Mapping[str, Any]) -> StoredEvent:
    """A row with :data:`EVENT_COLUMNS` as a :class:`StoredEvent` (payload upcast)."""
    return _event(row, parse_json(row["payload"]))


def _event(row: Mapping[str, Any], stored_payload: Any) -> StoredEvent:
    return StoredEvent(
        seq=int(row["seq"]),
        xid=int(row["xid"]),
        aggregate_type=row["aggregate_type"],
        aggregate_id=row["aggregate_id"],
        aggregate_version=int(row["aggregate_version"]),
        event_type=row["event_type"],
        payload=current_payload(row["event_type"], int(row["schema_version"]), stored_payload),
        occurred_at=row["occurred_at"],
    )


# -- one aggregate's events (history, time travel, ``cqrs events show``) ------------------------


@dataclass(frozen=True, slots=True)
class LoggedEvent:
    """An event with what only the history shows: the schema it was stored with, the
    stored payload as parsed (for a payload that cannot be upcast) and its metadata."""

    event: StoredEvent  # payload in the current schema
    schema_version: int
    stored_payload: Any
    metadata: dict[str, Any]

    @property
    def readable(self) -> bool:
        """Whether ``event.payload`` is the payload in the current schema."""
        return UNREADABLE_PAYLOAD not in self.event.payload

    def payload_json(self) -> str:
        """Compact JSON of the payload in the current schema; of the stored one, as
        stored, when it cannot be upcast (``schema_version`` then says which it is)."""
        return compact_json(self.event.payload if self.readable else self.stored_payload)


def compact_json(value: Any) -> str:
    """``value`` as JSON without spaces, keys sorted (jsonb keeps no key order: sorted
    reads better than jsonb's shortest-first)."""
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    except TypeError:  # an integer beyond 64 bits
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, sort_keys=True)


def logged_event(row: Mapping[str, Any]) -> LoggedEvent:
    """A row with :data:`EVENT_COLUMNS` plus ``metadata`` (text) as a :class:`LoggedEvent`."""
    stored = parse_json(row["payload"])
    schema_version = int(row["schema_version"])
    event = _event(row, stored)
    metadata = parse_json(row["metadata"]) if row["metadata"] is not None else {}
    return LoggedEvent(
        event, schema_version, stored, metadata if isinstance(metadata, dict) else {}
    )


_LOGGED_COLUMNS = f"{EVENT_COLUMNS}, v.metadata::text AS metadata"

# The UNIQUE (aggregate_id, aggregate_version) index gives both the rows and their order.
_HISTORY_PAGE = f"""
SELECT {_LOGGED_COLUMNS} FROM events v
WHERE v.aggregate_id = $1::uuid AND ($2::text IS NULL OR v.aggregate_type = $2::text)
  AND v.aggregate_version > $3::bigint
ORDER BY v.aggregate_version LIMIT $4
"""

# The aggregate as of $3: its events in version order up to (not including) the first
# one that occurred later. Command clocks are read before the aggregate's lock is taken,
# so occurred_at may step back by a little between versions; cutting at the first later
# event keeps the prefix gapless, as the reducers need.
# (From version $4 on: what follows a snapshot, common/snapshots.py.)
AS_OF_CUTOFF = """coalesce(
    (SELECT min(w.aggregate_version) FROM events w
     WHERE w.aggregate_id = $1::uuid AND w.occurred_at > $3::timestamptz),
    9223372036854775807)"""
_AS_OF = f"""
SELECT {EVENT_COLUMNS} FROM events v
WHERE v.aggregate_id = $1::uuid AND v.aggregate_type = $2::text
  AND v.aggregate_version > $4::bigint AND v.aggregate_version < {AS_OF_CUTOFF}
ORDER BY v.aggregate_version
"""

_FIRST_EVENT = """
SELECT occurred_at FROM events
WHERE aggregate_id = $1::uuid AND aggregate_type = $2::text AND aggregate_version = 1
"""


async def history_page(
    db: Executor,
    aggregate_id: str,
    aggregate_type: str | None,
    after_version: int,
    limit: int,
) -> list[LoggedEvent]:
    """Up to ``limit`` events of one aggregate after ``after_version``, in version order
    (``aggregate_type`` ``None``: whatever type the id has)."""
    rows = await db.fetch(_HISTORY_PAGE, aggregate_id, aggregate_type, after_version, limit)
    return [logged_event(r) for r in rows]


async def stream_events_as_of(
    conn: asyncpg.Connection,
    aggregate_type: str,
    aggregate_id: str,
    as_of: datetime,
    after_version: int = 0,
    prefetch: int = 1000,
) -> AsyncIterator[StoredEvent]:
    """The events that make up the aggregate as it was at ``as_of``, in version order
    (those after ``after_version``: a snapshot holds the ones before), one by one through
    a cursor (``conn`` must be in a transaction): memory stays that of ``prefetch`` rows
    however long the history is."""
    cursor = conn.cursor(
        _AS_OF, aggregate_id, aggregate_type, as_of, after_version, prefetch=prefetch
    )
    async for row in cursor:
        yield stored_event(row)


_AGGREGATES_UNTIL = f"""
SELECT {EVENT_COLUMNS} FROM events v
WHERE v.aggregate_id = ANY($1::uuid[])
  AND (v.xid, v.seq) <= ($2::bigint::text::xid8, $3::bigint)
ORDER BY v.xid, v.seq
"""


async def events_until(
    db: Executor, aggregate_ids: Collection[str], until: Position
) -> list[StoredEvent]:
    """Every event of the aggregates ``aggregate_ids`` up to ``until`` (a checkpoint: all
    of them committed), in the projector's order."""
    rows = await db.fetch(_AGGREGATES_UNTIL, list(aggregate_ids), until.xid, until.seq)
    return [stored_event(r) for r in rows]


async def created_at(db: Executor, aggregate_type: str, aggregate_id: str) -> datetime | None:
    """When the aggregate's first event occurred; ``None`` if it has none."""
    found: datetime | None = await db.fetchval(_FIRST_EVENT, aggregate_id, aggregate_type)
    return found


# -- following the log in commit-safe order (the projector, ``cqrs events tail``) -------------
#
# One statement takes the snapshot's xmin, below which every transaction has finished, and
# the events below it in (xid, seq) order, so a follower never skips an event that commits
# late (docs/ARCHITECTURE.md, "Commit-safe order").


def commit_safe_read(columns: str, filters: str) -> str:
    """The statement every follower of the log reads with (the projector's batches, the
    tail): the snapshot's horizon, and the next events of the ``filters`` after position
    ``($1, $2)`` and below that horizon, in ``(xid, seq)`` order, at most ``$3``. One
    statement, hence one snapshot, so nothing can appear later below the horizon.
    ``columns`` and ``filters`` use the alias ``v``; filter parameters start at ``$4``."""
    return f"""
WITH h AS (SELECT pg_snapshot_xmin(pg_current_snapshot()) AS xmin)
SELECT h.xmin::text::bigint AS horizon, e.* FROM h LEFT JOIN LATERAL (
  SELECT {columns} FROM events v
  WHERE (v.xid, v.seq) > ($1::bigint::text::xid8, $2::bigint) AND v.xid < h.xmin
    AND {filters}
  -- The table's columns (not the bigint output alias), so the (xid, seq) index gives the order.
  ORDER BY v.xid, v.seq LIMIT $3) e ON true
"""


# How far anything counts committed events (projector lag, status, the write server's
# backlog): counting costs O(backlog), so a huge one is shown as "at least this".
COUNT_CAP = 10_000_000


def count_after_statement(filters: str) -> str:
    """Counting the committed events of ``filters`` after position ``($1, $2)``, at most
    ``$3`` (filters use the alias ``v``; their parameters start at ``$4``)."""
    return f"""
SELECT count(*) FROM (
  SELECT 1 FROM events v
  WHERE (v.xid, v.seq) > ($1::bigint::text::xid8, $2::bigint) AND {filters}
  LIMIT $3) e
"""


_COUNT_ALL_AFTER = count_after_statement("true")


async def count_all_after(db: Executor, after: Position, cap: int = COUNT_CAP) -> int:
    """Committed events of every type after ``after`` (at most ``cap``)."""
    return int(await db.fetchval(_COUNT_ALL_AFTER, after.xid, after.seq, cap))


def continue_at(
    start: Position, events: Sequence[StoredEvent], limit: int, horizon: int
) -> Position:
    """Where a reader continues after a :func:`commit_safe_read`: after the last event of a
    full read, else at the horizon (everything below it has been seen). Never behind
    ``start``: the horizon never goes backwards, but a checkpoint written by another
    reader (e.g. a rebuild) may be ahead of this snapshot."""
    nxt = events[-1].position if len(events) == limit else Position(horizon, 0)
    return max(nxt, start)


# -- the tail of the whole log (``cqrs events tail``) -------------------------------------------


def _tail_filters(first: int) -> str:
    """A :class:`TailFilter` as SQL: its type is parameter ``$first``, its id the next."""
    t, i = f"${first}", f"${first + 1}"
    return (
        f"({t}::text IS NULL OR v.event_type = {t}::text OR v.aggregate_type = {t}::text)"
        f" AND ({i}::uuid IS NULL OR v.aggregate_id = {i}::uuid)"
    )


_NEWEST = f"""
WITH h AS (SELECT pg_snapshot_xmin(pg_current_snapshot()) AS xmin)
SELECT h.xmin::text::bigint AS horizon, e.* FROM h LEFT JOIN LATERAL (
  SELECT {_LOGGED_COLUMNS} FROM events v
  WHERE v.xid < h.xmin AND {_tail_filters(2)}
  ORDER BY v.xid DESC, v.seq DESC LIMIT $1) e ON true
"""


_AFTER = commit_safe_read(_LOGGED_COLUMNS, _tail_filters(4))


@dataclass(frozen=True, slots=True)
class TailFilter:
    """``type`` matches an event type (``OrderPlaced``) or an aggregate type (``Order``)."""

    type: str | None = None
    aggregate_id: str | None = None


@dataclass(frozen=True, slots=True)
class Tail:
    """Events in commit-safe order and the position to continue after."""

    events: list[LoggedEvent]
    next: Position


async def newest(db: Executor, where: TailFilter, limit: int) -> Tail:
    """The newest ``limit`` committed events matching ``where`` (oldest of them first);
    ``next`` is the horizon: every later event is after it."""
    rows = await db.fetch(_NEWEST, limit, where.type, where.aggregate_id)
    events = [logged_event(r) for r in reversed(rows) if r["seq"] is not None]
    return Tail(events, Position(int(rows[0]["horizon"]), 0))


async def after(db: Executor, start: Position, where: TailFilter, limit: int) -> Tail:
    """Up to ``limit`` events matching ``where`` after ``start``, below the horizon."""
    rows = await db.fetch(_AFTER, start.xid, start.seq, limit, where.type, where.aggregate_id)
    events = [logged_event(r) for r in rows if r["seq"] is not None]
    nxt = continue_at(start, [e.event for e in events], limit, int(rows[0]["horizon"]))
    return Tail(events, nxt)
