"""SOURCE_READ_MODEL and SOURCE_WRITE_MODEL: one PostgreSQL source, two sets of queries.

An :class:`EntityQuery` says where one entity type is read from (the ``SELECT ...
FROM ... JOIN`` part, the table alias owning the columns and any standing
condition such as ``deleted_at IS NULL``). :class:`PostgresSource` runs gets and
keyset pages over it and serializes each row to its protobuf document.

The read models are maintained by the projector: a source built with
``checkpoints`` (projection names per entity) answers only once that projection has
been built, and waits for consistency tokens on its checkpoint (rows and checkpoint
commit together, so a later statement that sees the checkpoint sees the rows). The
write model is the truth: built without ``checkpoints``, it never waits.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
from google.protobuf.message import Message

from common import write_model_queries
from common.cursors import sort_key
from common.documents import (
    CUSTOMER_COLUMNS,
    ORDER_COLUMNS,
    PRODUCT_COLUMNS,
    customer_from_row,
    order_from_row,
    product_from_row,
)
from common.positions import Position
from read_server.sources.base import Freshness, OrderFilter, Page, PageRequest
from read_server.sources.waiting import BEHIND, CheckpointWatch, NotReady, Pending


@dataclass(frozen=True, slots=True)
class EntityQuery:
    """Where one entity type lives; ``alias`` prefixes its columns (e.g. ``"o."``)."""

    select: str
    from_row: Callable[[Mapping[str, Any]], Message]
    alias: str = ""
    conditions: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Queries:
    products: EntityQuery
    customers: EntityQuery
    orders: EntityQuery


READ_MODEL = Queries(
    EntityQuery(f"SELECT {PRODUCT_COLUMNS} FROM read.product_read_model", product_from_row),
    EntityQuery(f"SELECT {CUSTOMER_COLUMNS} FROM read.customer_read_model", customer_from_row),
    EntityQuery(f"SELECT {ORDER_COLUMNS} FROM read.order_read_model", order_from_row),
)
WRITE_MODEL = Queries(
    EntityQuery(
        write_model_queries.PRODUCTS, product_from_row, "", (write_model_queries.PRODUCTS_LIVE,)
    ),
    EntityQuery(
        write_model_queries.CUSTOMERS, customer_from_row, "", (write_model_queries.CUSTOMERS_LIVE,)
    ),
    EntityQuery(
        write_model_queries.ORDERS,
        order_from_row,
        write_model_queries.ORDERS_ALIAS,
        (write_model_queries.ORDERS_LIVE,),
    ),
)
# The projections behind READ_MODEL, per entity.
READ_MODEL_CHECKPOINTS = {
    "products": "pg:products",
    "customers": "pg:customers",
    "orders": "pg:orders",
    "analytics": "pg:analytics",
    "webhooks": "webhooks:fanout",
}

_CHECKPOINT = "SELECT xid, seq FROM read.projection_checkpoints WHERE projection = $1"
_BEING_BUILT = NotReady("is being built from the event log; retry shortly")


class PostgresSource:
    """Gets and keyset pages over ``queries``; see the module docstring for ``checkpoints``."""

    def __init__(
        self, pool: asyncpg.Pool, queries: Queries, checkpoints: Mapping[str, str] | None = None
    ) -> None:
        self._pool = pool
        self._queries = queries
        self._checkpoints = dict(checkpoints or {})
        self._built: set[str] = set()  # projections seen built (they stay built)
        self._watch = CheckpointWatch(self._checkpoint)

    async def get_product(self, product_id: str, freshness: Freshness) -> bytes | None:
        await self.ready("products", freshness)
        return await self._get(self._queries.products, product_id)

    async def list_products(
        self, page: PageRequest, category: str | None, freshness: Freshness
    ) -> Page:
        await self.ready("products", freshness)
        filters = [] if category is None else [("category", category)]
        return await self._page(self._queries.products, page, filters)

    async def get_customer(self, customer_id: str, freshness: Freshness) -> bytes | None:
        await self.ready("customers", freshness)
        return await self._get(self._queries.customers, customer_id)

    async def list_customers(self, page: PageRequest, freshness: Freshness) -> Page:
        await self.ready("customers", freshness)
        return await self._page(self._queries.customers, page)

    async def get_order(self, order_id: str, freshness: Freshness) -> bytes | None:
        await self.ready("orders", freshness)
        return await self._get(self._queries.orders, order_id)

    async def list_orders(
        self, page: PageRequest, order_filter: OrderFilter, freshness: Freshness
    ) -> Page:
        await self.ready("orders", freshness)
        filters: list[tuple[str, object]] = []
        if order_filter.customer_id is not None:
            filters.append(("customer_id", uuid.UUID(order_filter.customer_id)))
        if order_filter.status is not None:
            filters.append(("status", order_filter.status))
        return await self._page(self._queries.orders, page, filters)

    async def ready(self, entity: str, freshness: Freshness) -> None:
        """Once the projection behind ``entity`` (a key of the checkpoints given) is built,
        and has reached the token if there is one; UNAVAILABLE when the wait is spent."""
        projection = self._checkpoints.get(entity)
        if projection is None or (freshness.position is None and projection in self._built):
            return
        wanted = freshness.position

        async def attempt() -> Pending | None:
            checkpoint = await self._checkpoint(projection)
            if checkpoint is None:
                return _BEING_BUILT
            self._built.add(projection)
            return None if wanted is None or checkpoint >= wanted else BEHIND

        await self._watch.until_fresh(projection, freshness, attempt)

    async def _checkpoint(self, projection: str) -> Position | None:
        row = await self._pool.fetchrow(_CHECKPOINT, projection)
        return None if row is None else Position(row["xid"], row["seq"])

    async def _get(self, query: EntityQuery, ident: str) -> bytes | None:
        where = [*query.conditions, f"{query.alias}id = $1"]
        row = await self._pool.fetchrow(
            f"{query.select} WHERE {' AND '.join(where)}", uuid.UUID(ident)
        )
        return None if row is None else query.from_row(row).SerializeToString()

    async def _page(
        self, query: EntityQuery, page: PageRequest, filters: Sequence[tuple[str, object]] = ()
    ) -> Page:
        """Newest first, strictly after ``page.after``, where every ``(column, value)`` holds."""
        a = query.alias
        where = list(query.conditions)
        args: list[object] = []
        for column, value in filters:
            args.append(value)
            where.append(f"{a}{column} = ${len(args)}")
        if page.after is not None:
            args += [page.after.created_at, uuid.UUID(page.after.id)]
            # A row comparison, so the (created_at DESC, id DESC) indexes serve it.
            where.append(f"({a}created_at, {a}id) < (${len(args) - 1}, ${len(args)})")
        args.append(page.size + 1)
        sql = query.select
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += f" ORDER BY {a}created_at DESC, {a}id DESC LIMIT ${len(args)}"
        rows = await self._pool.fetch(sql, *args)
        more = len(rows) > page.size
        rows = rows[: page.size]
        items = [query.from_row(row).SerializeToString() for row in rows]
        last = rows[-1] if more else None
        return Page(items, None if last is None else sort_key(last["created_at"], last["id"]))
