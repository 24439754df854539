"""Comparing every consumer with the write model, document by document, field by field.

The write model is read with the same queries the read server's SOURCE_WRITE_MODEL uses
(each entity's ``write_model``, :mod:`common.entities`). Each projection must hold exactly those documents
(versions and timestamps included), plus whatever its store checks besides (Redis: the
index memberships the documents imply; PostgreSQL orders: ``items_count``).

Both sides are compared at one position of the log, so verify tells the truth while
writes flow: a consumer is read first (its checkpoint, then its documents), then the write
model in one snapshot together with the events committed after that checkpoint. The
documents those events touch (an order also through its customer's contact) may or may
not have been applied when the consumer was read: they are *in flight* and not compared
this time; every other document has not changed since the checkpoint on either side and
must be equal. A tampered document is therefore found unless it is being changed at that
very moment, and a run on a quiet system compares everything.
"""

from __future__ import annotations

import sys
from collections.abc import Collection, Iterable, Sequence
from typing import TextIO

import asyncpg
from google.protobuf.message import Message

from common.entities import Entity, entity
from common.positions import Position
from projector.consumer import Consumer, Expected
from projector.errors import StoreLost
from projector.outbox import count_after

_LAG_CAP = 1_000_000

# The aggregates changed by events after a position (the xid/seq order of the log).
_TOUCHED = """
SELECT DISTINCT v.aggregate_type, v.aggregate_id::text AS id FROM events v
WHERE (v.xid, v.seq) > ($1::bigint::text::xid8, $2::bigint)
"""
# The same, of some aggregates only (the continuous audit's sample): the events' unique
# (aggregate_id, aggregate_version) index finds them, whatever the backlog.
_TOUCHED_AMONG = _TOUCHED + "AND v.aggregate_id = ANY($3::uuid[])\n"


class WriteModelReference:
    """The write model as :class:`~projector.consumer.Reference`: one REPEATABLE READ
    snapshot per call, holding the family's documents and what is in flight."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def documents(self, family: str, after: Position | None) -> Expected:
        kind = entity(family)
        async with (
            self._pool.acquire() as conn,
            conn.transaction(isolation="repeatable_read", readonly=True),
        ):
            rows = await conn.fetch(kind.write_model.all_live())
            in_flight = frozenset() if after is None else await _in_flight(conn, kind, after)
        return Expected({str(r["id"]): kind.from_row(r) for r in rows}, in_flight)

    async def sample(
        self, family: str, ids: Collection[str], after: Position, shown: Iterable[Message] = ()
    ) -> Expected:
        """Like :meth:`documents`, for the documents ``ids`` only (the continuous audit,
        :mod:`projector.audit`): those of them that are live, and which of them are in
        flight after ``after``. ``shown``: the store's copies of them, whose embedded
        aggregates (an order's customer) count as well as the write model's."""
        kind = entity(family)
        wanted = list(ids)
        async with (
            self._pool.acquire() as conn,
            conn.transaction(isolation="repeatable_read", readonly=True),
        ):
            rows = await conn.fetch(
                f"{kind.write_model.all_live()} AND {kind.write_model.alias}id = ANY($1::uuid[])",
                wanted,
            )
            docs = {str(r["id"]): kind.from_row(r) for r in rows}
            # Only these aggregates' events can change these documents: theirs, and those
            # of what they embed (as the write model and the store each show it).
            embedded = (
                str(getattr(doc, embed.by))
                for embed in kind.embeds
                for doc in (*docs.values(), *shown)
            )
            among = set(wanted) | {other for other in embedded if other}
            in_flight = await _in_flight(conn, kind, after, among)
        return Expected(docs, in_flight & set(wanted))


async def _in_flight(
    conn: asyncpg.Connection, kind: Entity, after: Position, among: Collection[str] | None = None
) -> frozenset[str]:
    """The ids of ``kind``'s documents an event after ``after`` changed: its own, and
    those showing another aggregate an event changed (the orders of a renamed customer).
    ``among``: only events of these aggregates count (``None``: every event)."""
    if among is None:
        touched = await conn.fetch(_TOUCHED, after.xid, after.seq)
    else:
        touched = await conn.fetch(_TOUCHED_AMONG, after.xid, after.seq, list(among))
    ids = {r["id"] for r in touched if r["aggregate_type"] == kind.aggregate_type}
    for embed in kind.embeds:
        others = [r["id"] for r in touched if r["aggregate_type"] == embed.aggregate_type]
        if others:
            showing = await conn.fetch(
                f"SELECT x.id::text AS id FROM ({kind.write_model.select}) x "
                f"WHERE x.{embed.by}::text = ANY($1::text[])",
                others,
            )
            ids.update(r["id"] for r in showing)
    return frozenset(ids)


async def verify(
    consumers: Sequence[Consumer], pool: asyncpg.Pool, *, out: TextIO | None = None
) -> int:
    """Print every difference between the consumers and the write model; return how many."""
    out = out if out is not None else sys.stdout
    reference = WriteModelReference(pool)
    total = 0
    for consumer in consumers:
        audit = await consumer.audit(reference)
        if audit is None:
            continue
        lines = audit.differences
        for line in lines:
            print(f"{consumer.name} {line}", file=out)
        if lines:
            try:
                checkpoint = await consumer.checkpoint()
            except StoreLost as exc:
                print(f"note: {consumer.name} is not built ({exc.why})", file=out)
            else:
                behind = await count_after(
                    pool, checkpoint, consumer.consumes, _LAG_CAP, consumer.event_types
                )
                if behind:
                    print(f"note: {consumer.name} is {behind} events behind the log", file=out)
        flight = f", {audit.in_flight} in flight (not compared)" if audit.in_flight else ""
        print(
            f"{consumer.name}: {audit.documents} documents, {len(lines)} differences{flight}",
            file=out,
        )
        total += len(lines)
    print(f"verify: {total} differences" if total else "verify: all projections match", file=out)
    return total
