"""SOURCE_READ_MODEL: the ``read.*`` tables the PostgreSQL projections maintain."""

from __future__ import annotations

import uuid
from typing import Literal

from common.documents import (
    CUSTOMER_COLUMNS,
    PRODUCT_COLUMNS,
    customer_from_row,
    order_from_row,
    product_from_row,
)
from read_server.sources.base import Freshness, OrderFilter, Page, PageRequest
from read_server.sources.pg_queries import EntityQuery, PgReader
from read_server.sources.waiting import BEHIND, Behind, poll_until_fresh

PRODUCTS = EntityQuery(f"SELECT {PRODUCT_COLUMNS} FROM read.product_read_model", product_from_row)
CUSTOMERS = EntityQuery(
    f"SELECT {CUSTOMER_COLUMNS} FROM read.customer_read_model", customer_from_row
)
ORDERS = EntityQuery(
    "SELECT id, order_number, customer_id, customer_name, customer_email, items, total_cents,"
    " currency, status, version, created_at, updated_at FROM read.order_read_model",
    order_from_row,
)


class ReadModelSource:
    """Answers from the read models once their checkpoint covers the token."""

    def __init__(self, reader: PgReader) -> None:
        self._reader = reader

    async def get_product(self, product_id: str, freshness: Freshness) -> bytes | None:
        await self._wait("pg:products", freshness)
        return await self._reader.get(PRODUCTS, product_id)

    async def list_products(
        self, page: PageRequest, category: str | None, freshness: Freshness
    ) -> Page:
        await self._wait("pg:products", freshness)
        filters = [] if category is None else [("category", category)]
        return await self._reader.page(PRODUCTS, page, filters)

    async def get_customer(self, customer_id: str, freshness: Freshness) -> bytes | None:
        await self._wait("pg:customers", freshness)
        return await self._reader.get(CUSTOMERS, customer_id)

    async def list_customers(self, page: PageRequest, freshness: Freshness) -> Page:
        await self._wait("pg:customers", freshness)
        return await self._reader.page(CUSTOMERS, page)

    async def get_order(self, order_id: str, freshness: Freshness) -> bytes | None:
        await self._wait("pg:orders", freshness)
        return await self._reader.get(ORDERS, order_id)

    async def list_orders(
        self, page: PageRequest, order_filter: OrderFilter, freshness: Freshness
    ) -> Page:
        await self._wait("pg:orders", freshness)
        filters: list[tuple[str, object]] = []
        if order_filter.customer_id is not None:
            filters.append(("customer_id", uuid.UUID(order_filter.customer_id)))
        if order_filter.status is not None:
            filters.append(("status", order_filter.status))
        return await self._reader.page(ORDERS, page, filters)

    async def _wait(self, projection: str, freshness: Freshness) -> None:
        # Rows and checkpoint commit together, so a later statement that sees the
        # checkpoint also sees the rows.
        wanted = freshness.position
        if wanted is None:
            return

        async def attempt() -> Literal[Behind.BEHIND] | None:
            checkpoint = await self._reader.checkpoint(projection)
            return None if checkpoint is not None and checkpoint >= wanted else BEHIND

        await poll_until_fresh(projection, freshness, attempt)
