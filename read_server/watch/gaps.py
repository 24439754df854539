"""What changed between two positions, from the event log: the gap a resumed (or fallen
behind) Watch stream must close.

The projection keeps only each document's current state, so a stream that missed some
states can only be sent the current one. Whether that current state is the *next* state
the client would have seen, or skips some, the event log says: the commits that changed
the aggregate between the client's position and the document's. None: nothing to send;
one: the current state is the next one (a change); more: a resync. Always read on the
primary: a replica that lags would under-count.
"""

from __future__ import annotations

import asyncpg

from common.entities import ORDERS, Entity
from common.positions import Position

# Orders a resumed feed catches up one by one; more changed since: the client lists again.
FEED_CATCH_UP_MAX = 1000

_BETWEEN = """
  (v.xid, v.seq) > ($1::bigint::text::xid8, $2::bigint)
  AND (v.xid, v.seq) <= ($3::bigint::text::xid8, $4::bigint)
"""

# The aggregate's own events, and those of the aggregates its document embeds (an order
# shows its customer's contact) of the types that change what is embedded.
_COMMITS = f"""
SELECT count(DISTINCT v.xid) FROM events v
WHERE v.aggregate_id = ANY($5::uuid[]) AND {_BETWEEN}
  AND (v.aggregate_id = $6::uuid OR v.event_type = ANY($7::text[]))
"""

_CHANGED = f"""
SELECT v.aggregate_id::text AS id, count(DISTINCT v.xid) AS commits,
  (array_agg(v.xid::text::bigint ORDER BY v.xid DESC, v.seq DESC))[1] AS xid,
  (array_agg(v.seq ORDER BY v.xid DESC, v.seq DESC))[1] AS seq
FROM events v
WHERE v.aggregate_type = $5::text AND {_BETWEEN}
  AND ($7::uuid IS NULL OR v.aggregate_id IN (SELECT o.id FROM orders o WHERE o.customer_id = $7))
GROUP BY v.aggregate_id LIMIT $6
"""

# Whether an embedded aggregate changed (of one, $6, or of any: NULL).
_EMBEDS_CHANGED = f"""
SELECT EXISTS (SELECT 1 FROM events v
  WHERE v.aggregate_type = $5::text AND v.event_type = ANY($7::text[]) AND {_BETWEEN}
    AND ($6::uuid IS NULL OR v.aggregate_id = $6::uuid))
"""


class Gaps:
    """Counts commits in the event log on ``pool`` (the primary's)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def commits(
        self, entity: Entity, ident: str, doc: bytes | None, after: Position, upto: Position
    ) -> int:
        """How many transactions changed ``ident``'s document (``doc``, as of ``upto``;
        ``None``: deleted) in (``after``, ``upto``]."""
        if upto <= after:
            return 0
        ids, folds = [ident], list[str]()
        if doc is not None and entity.embeds:
            parsed = entity.document.FromString(doc)
            for embed in entity.embeds:
                ids.append(getattr(parsed, embed.by))
                folds.extend(embed.folds)
        found = await self._pool.fetchval(_COMMITS, *after, *upto, ids, ident, folds)
        return int(found or 0)

    async def changed_orders(
        self, customer: str | None, after: Position, upto: Position
    ) -> dict[str, tuple[int, Position]] | None:
        """The orders (of ``customer``, or of all) changed in (``after``, ``upto``] ->
        their commits and the position of their newest event; ``None`` when they cannot be
        sent one by one: more than :data:`FEED_CATCH_UP_MAX`, or a customer's contact,
        which orders show, changed (of ``customer``, or of anyone for the feed of every
        order)."""
        if upto <= after:
            return {}
        for embed in ORDERS.embeds:
            if await self._pool.fetchval(
                _EMBEDS_CHANGED, *after, *upto, embed.aggregate_type, customer, list(embed.folds)
            ):
                return None
        rows = await self._pool.fetch(
            _CHANGED, *after, *upto, ORDERS.aggregate_type, FEED_CATCH_UP_MAX + 1, customer
        )
        if len(rows) > FEED_CATCH_UP_MAX:
            return None
        return {r["id"]: (int(r["commits"]), Position(r["xid"], r["seq"])) for r in rows}
