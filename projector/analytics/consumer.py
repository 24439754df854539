"""``pg:analytics``: the materialized analytics, a consumer of the event log.

Each batch is one PostgreSQL transaction: lock and compare the checkpoint row, load
what the batch needs (the facts of the orders it changes, the affected customers'
first/last order times and months, the affected products' last sale), fold the
events (:mod:`projector.analytics.fold`), write the changes as deltas, recompute the
few times an uncounted order may have set, and move the checkpoint. So every event is
applied exactly once, with the figures and the checkpoint always in step.

A copy is the schema ``analytics__rebuild`` with a checkpoint row of its own;
switching renames it to ``analytics`` in the transaction that holds the live
checkpoint row, after catching it up to the horizon in there.
"""

from __future__ import annotations

from datetime import date, datetime

import asyncpg

from common import analytics_materialized as mat
from common import analytics_queries as live
from common import events as ev
from common.positions import Position
from projector.analytics.fold import (
    EVENT_TYPES,
    AnalyticsError,
    Loaded,
    affected,
    fold,
    month_deltas,
    placed_orders,
    referenced_orders,
)
from projector.analytics.tables import COPY, LIVE, AnalyticsTables
from projector.consumer import Audit, CatchUp, Consumer, Reference
from projector.errors import PoisonEvent, StoreLost
from projector.outbox import Batch
from projector.stores import pg_checkpoints, pg_switch

NAME = "pg:analytics"


class AnalyticsConsumer:
    """The analytics tables of one schema (live or copy) and their checkpoint row.

    ``db`` is the pool, or one connection inside a transaction (a copy being caught
    up within the switch, see :meth:`switch_to`).
    """

    def __init__(self, db: asyncpg.Pool | asyncpg.Connection, schema: str = LIVE) -> None:
        self._db = db
        self._tables = AnalyticsTables(schema)
        self._name = NAME if schema == LIVE else NAME + "__rebuild"

    @property
    def name(self) -> str:
        return self._name

    @property
    def consumes(self) -> tuple[str, ...]:
        return (ev.PRODUCT, ev.CUSTOMER, ev.ORDER)

    @property
    def event_types(self) -> tuple[str, ...]:
        return EVENT_TYPES

    rebuildable = True
    not_rewound_because = (
        "a fold (counts and sums over every event up to its checkpoint): what the events "
        "after a position added cannot be taken out again; use `cqrs projector rebuild "
        "--only analytics` (from the origin)"
    )

    async def aclose(self) -> None:
        """The pool is the App's: nothing of its own."""

    async def checkpoint(self) -> Position:
        found = await pg_checkpoints.read(self._db, self._name)
        if found is None:
            raise StoreLost(self._name, "has no checkpoint row (never built)")
        return found

    async def apply(self, batch: Batch) -> None:
        if not batch.events:  # the horizon moved over what it does not fold
            await pg_checkpoints.advance(self._db, self._name, batch.start, batch.next)
            return
        if isinstance(self._db, asyncpg.Pool):
            async with self._db.acquire() as conn, conn.transaction():
                await self._apply(conn, batch)
        else:
            async with self._db.transaction():  # a savepoint in the switch's transaction
                await self._apply(self._db, batch)

    async def _apply(self, conn: asyncpg.Connection, batch: Batch) -> None:
        await pg_checkpoints.advance(conn, self._name, batch.start, batch.next)
        t = self._tables
        events = batch.events
        try:
            placed = placed_orders(events)
            orders = await t.orders(conn, referenced_orders(events, placed))
            touched = affected([*orders.values(), *placed.values()])
            loaded = Loaded(
                orders,
                await t.customer_times(conn, touched.customers),
                await t.last_sold(conn, touched.products),
                placed,
            )
            months_before = await t.customer_months(conn, touched.customers)
            changes = fold(events, loaded)
        except AnalyticsError as exc:
            raise PoisonEvent(exc.event, str(exc)) from exc
        await t.write_facts(conn, changes)
        times = dict(changes.customer_times)
        times.update(await t.recompute_customer_times(conn, changes.recompute_customers))
        last_sold: dict[str, datetime | None] = dict(changes.last_sold)
        last_sold.update(await t.recompute_last_sold(conn, changes.recompute_products))
        first_before = {c: loaded.customer_times[c].first_order_at for c in loaded.customer_times}
        first_after = {c: x.first_order_at for c, x in times.items()}
        await t.write_entities(conn, changes, times, last_sold)
        new_returning = month_deltas(months_before, first_before, first_after, changes)
        await t.write_sums(conn, changes, new_returning)

    # -- copies --------------------------------------------------------------------------------

    async def new_copy(self) -> AnalyticsConsumer:
        pool = self._pool()
        async with pool.acquire() as conn, conn.transaction():
            await AnalyticsTables.create_copy(conn)
            await pg_checkpoints.reset(conn, NAME + "__rebuild")
        return AnalyticsConsumer(pool, COPY)

    async def switch_to(self, copy: Consumer, catch_up: CatchUp) -> Position:
        if not isinstance(copy, AnalyticsConsumer) or copy.name == self._name:
            raise TypeError(f"cannot switch {self._name} to {copy.name}")
        pool = self._pool()
        await catch_up(copy, None)
        async with pool.acquire() as conn:
            await copy._tables.analyze(conn)  # plans fit the new tables from the first read
        return await pg_switch.switch_in(
            pool,
            self._name,
            copy.name,
            lambda conn: catch_up(AnalyticsConsumer(conn, COPY), conn),
            AnalyticsTables.swap_in_copy,
        )

    async def discard(self) -> None:
        async with self._pool().acquire() as conn, conn.transaction():
            await AnalyticsTables.drop_copy(conn)
            await pg_checkpoints.delete(conn, self._name)

    async def describe(self) -> str:
        await self.checkpoint()
        return f"schema {self._tables.schema}"

    async def audit(self, reference: Reference) -> Audit:
        """Every figure family against the same figures computed live from the write tables
        (read here; ``reference`` is not needed). One snapshot holds both sides: the figures
        at this consumer's checkpoint and the write tables with every event after it, so
        the figures such an event touches are in flight and left out (see
        :mod:`projector.verify`)."""
        pool = self._pool()
        compared = skipped = 0
        lines: list[str] = []
        async with (
            pool.acquire() as conn,
            conn.transaction(isolation="repeatable_read", readonly=True),
        ):
            at = await pg_checkpoints.read(conn, self._name)
            flight = _NOTHING if at is None else await _in_flight(conn, at)
            for name, (live_sql, mat_sql, args, keys) in _audit_queries().items():
                skip = flight[keys]
                want = [tuple(r) for r in await conn.fetch(live_sql, *args)]
                got = [tuple(r) for r in await conn.fetch(mat_sql, *args)]
                kept = [r for r in want if r[0] not in skip]
                skipped += len(want) - len(kept)
                compared += len(kept)
                lines += _differences(name, kept, [r for r in got if r[0] not in skip])
        return Audit(compared, lines, skipped)

    def _pool(self) -> asyncpg.Pool:
        if not isinstance(self._db, asyncpg.Pool):
            raise TypeError("copies are made and switched through the pool, not a connection")
        return self._db


_EVERYTHING = 2**31 - 1  # a LIMIT that keeps every row


def _audit_queries() -> dict[str, tuple[str, str, tuple[object, ...], str]]:
    """(live SQL, materialized SQL, arguments, what the rows' first column is: a key of
    :data:`_InFlight`) per figure family."""
    months = (date(1, 1, 1), date(9999, 12, 1), None)
    return {
        "months": (live.MONTHS, mat.MONTHS, months, "months"),
        "top products": (
            live.TOP_PRODUCTS.format(order="revenue_cents"),
            mat.TOP_PRODUCTS_BY_REVENUE,
            (_EVERYTHING, None),
            "products",
        ),
        "top customers": (live.TOP_CUSTOMERS, mat.TOP_CUSTOMERS, (_EVERYTHING, None), "customers"),
        "customers": (live.ALL_CUSTOMER_TOTALS, mat.ALL_CUSTOMER_TOTALS, (), "customers"),
        "customer currencies": (
            live.ALL_CUSTOMER_CURRENCIES,
            mat.ALL_CUSTOMER_CURRENCIES,
            (),
            "customers",
        ),
        "products": (live.ALL_PRODUCT_TOTALS, mat.ALL_PRODUCT_TOTALS, (), "products"),
    }


# What the rows of a family are keyed by (their first column) -> the keys in flight.
_InFlight = dict[str, frozenset[object]]
_NOTHING: _InFlight = {"customers": frozenset(), "products": frozenset(), "months": frozenset()}

# Orders, customers and products an event after ($1, $2) touched ($3: the event types the
# consumer folds); the customers of those orders, the products on them, and every month
# the touched customers have orders in (an order can make a customer new or returning in
# another month).
_IN_FLIGHT = """
WITH t AS (
  SELECT DISTINCT v.aggregate_type, v.aggregate_id FROM events v
  WHERE (v.xid, v.seq) > ($1::bigint::text::xid8, $2::bigint) AND v.event_type = ANY($3::text[])
), o AS (
  SELECT o.id, o.customer_id FROM orders o JOIN t ON t.aggregate_type = 'Order' AND t.aggregate_id = o.id
), c AS (
  SELECT customer_id AS id FROM o UNION SELECT aggregate_id FROM t WHERE aggregate_type = 'Customer'
), p AS (
  SELECT i.product_id AS id FROM order_items i JOIN o ON o.id = i.order_id
  UNION SELECT aggregate_id FROM t WHERE aggregate_type = 'Product'
)
SELECT ARRAY(SELECT id::text FROM c) AS customers, ARRAY(SELECT id::text FROM p) AS products,
       ARRAY(SELECT DISTINCT date_trunc('month', x.created_at AT TIME ZONE 'UTC')::date
             FROM orders x WHERE x.customer_id IN (SELECT id FROM c)) AS months
"""


async def _in_flight(conn: asyncpg.Connection, after: Position) -> _InFlight:
    row = await conn.fetchrow(_IN_FLIGHT, after.xid, after.seq, list(EVENT_TYPES))
    return {name: frozenset(row[name]) for name in _NOTHING}


def _differences(
    name: str, want: list[tuple[object, ...]], got: list[tuple[object, ...]]
) -> list[str]:
    """One line per row only one side has (rows are compared whole)."""
    wanted, found = set(want), set(got)
    missing = [r for r in want if r not in found]
    extra = [r for r in got if r not in wanted]
    return [f"{name}: {r}: missing (the write model has it)" for r in missing] + [
        f"{name}: {r}: extra (not in the write model)" for r in extra
    ]
