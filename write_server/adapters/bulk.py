"""Bulk persistence for the seeder: the same rows and events as the commands, via COPY.

Aggregates come from the domain (so the events are exactly what the commands
record); one call writes one transaction. Updates of existing products are
version-guarded like the unit of work's, so a concurrent writer makes the
batch fail instead of being overwritten.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import asyncpg

from common.documents import DOCUMENT_TAIL
from common.events import CUSTOMER_FIELDS, NOTIFY_CHANNEL, ORDER_ITEM_FIELDS, PRODUCT_FIELDS
from write_server.domain.aggregate import Aggregate
from write_server.domain.customer import Customer
from write_server.domain.errors import ConcurrencyConflict
from write_server.domain.order import Order
from write_server.domain.product import Product

_PRODUCT_COLUMNS = ("id", *PRODUCT_FIELDS, *DOCUMENT_TAIL)
_CUSTOMER_COLUMNS = ("id", *CUSTOMER_FIELDS, *DOCUMENT_TAIL)
_ORDER_COLUMNS = (
    "id", "order_number", "customer_id", "total_cents", "currency", "status",
    "version", "created_at", "updated_at",
)  # fmt: skip
_ITEM_COLUMNS = ("order_id", "line_no", *ORDER_ITEM_FIELDS)
_EVENT_COLUMNS = (
    "aggregate_type", "aggregate_id", "aggregate_version", "event_type", "schema_version",
    "payload", "metadata", "occurred_at",
)  # fmt: skip


async def next_order_numbers(conn: asyncpg.Connection, count: int) -> list[str]:
    rows = await conn.fetch(
        "SELECT nextval('order_number_seq') AS n FROM generate_series(1, $1)", count
    )
    return [f"ORD-{r['n']:08d}" for r in rows]


async def write_batch(
    conn: asyncpg.Connection,
    *,
    new: Sequence[Aggregate],
    changed_products: Sequence[Product],
    metadata: dict[str, str],
) -> None:
    """Insert ``new`` aggregates, update ``changed_products``; append every pending event."""
    async with conn.transaction():
        products = [a for a in new if isinstance(a, Product)]
        customers = [a for a in new if isinstance(a, Customer)]
        orders = [a for a in new if isinstance(a, Order)]
        if products:
            await conn.copy_records_to_table(
                "products",
                columns=_PRODUCT_COLUMNS,
                records=[_row(p, _PRODUCT_COLUMNS) for p in products],
            )
        if customers:
            await conn.copy_records_to_table(
                "customers",
                columns=_CUSTOMER_COLUMNS,
                records=[_row(c, _CUSTOMER_COLUMNS) for c in customers],
            )
        if orders:
            await conn.copy_records_to_table(
                "orders", columns=_ORDER_COLUMNS, records=[_order_row(o) for o in orders]
            )
            await conn.copy_records_to_table(
                "order_items",
                columns=_ITEM_COLUMNS,
                records=[
                    (o.id, n, *line.as_dict().values())
                    for o in orders
                    for n, line in enumerate(o.lines, start=1)
                ],
            )
        if changed_products:
            await _update_stock(conn, changed_products)
        events = [
            (e.aggregate_type, e.aggregate_id, e.version, e.event_type, e.schema_version,
             json.dumps(e.payload()), json.dumps(metadata), e.occurred_at)
            for a in (*changed_products, *new)
            for e in a.take_events()
        ]  # fmt: skip
        events.sort(key=lambda e: e[7])  # occurred_at: the order the commands happened in
        await conn.copy_records_to_table("events", columns=_EVENT_COLUMNS, records=events)
        await conn.execute("SELECT pg_notify($1, '')", NOTIFY_CHANNEL)
    for aggregate in (*new, *changed_products):
        aggregate.loaded_version = aggregate.version


async def _update_stock(conn: asyncpg.Connection, products: Sequence[Product]) -> None:
    updated = await conn.fetchval(
        """
        WITH v AS (
            SELECT * FROM unnest($1::uuid[], $2::int[], $3::bigint[], $4::bigint[],
                                 $5::timestamptz[]) AS v(id, stock, version, loaded, updated_at)
        ), u AS (
            UPDATE products p SET stock = v.stock, version = v.version, updated_at = v.updated_at
            FROM v WHERE p.id = v.id AND p.version = v.loaded RETURNING 1
        )
        SELECT count(*) FROM u
        """,
        [p.id for p in products],
        [p.stock for p in products],
        [p.version for p in products],
        [p.loaded_version for p in products],
        [p.updated_at for p in products],
    )
    if updated != len(products):
        raise ConcurrencyConflict("products changed while seeding; run the seeder again")


def _row(aggregate: Aggregate, columns: Sequence[str]) -> tuple[object, ...]:
    return tuple(getattr(aggregate, c) for c in columns)


def _order_row(o: Order) -> tuple[object, ...]:
    return (o.id, o.order_number, o.customer_id, o.total_cents, o.currency, o.status,
            o.version, o.created_at, o.updated_at)  # fmt: skip
