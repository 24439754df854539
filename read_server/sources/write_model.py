"""SOURCE_WRITE_MODEL: live queries on the write tables (the slow, always-fresh baseline).

The queries are :mod:`common.write_model_queries`. Consistency tokens never
wait: the write tables are the truth.
"""

from __future__ import annotations

import uuid

from common import write_model_queries as q
from common.documents import customer_from_row, order_from_row, product_from_row
from read_server.sources.base import Freshness, OrderFilter, Page, PageRequest
from read_server.sources.pg_queries import EntityQuery, PgReader

PRODUCTS = EntityQuery(q.PRODUCTS, product_from_row, "", (q.PRODUCTS_LIVE,))
CUSTOMERS = EntityQuery(q.CUSTOMERS, customer_from_row, "", (q.CUSTOMERS_LIVE,))
ORDERS = EntityQuery(q.ORDERS, order_from_row, q.ORDERS_ALIAS, (q.ORDERS_LIVE,))


class WriteModelSource:
    """Answers from the write tables; ``freshness`` is always satisfied."""

    def __init__(self, reader: PgReader) -> None:
        self._reader = reader

    async def get_product(self, product_id: str, freshness: Freshness) -> bytes | None:
        return await self._reader.get(PRODUCTS, product_id)

    async def list_products(
        self, page: PageRequest, category: str | None, freshness: Freshness
    ) -> Page:
        filters = [] if category is None else [("category", category)]
        return await self._reader.page(PRODUCTS, page, filters)

    async def get_customer(self, customer_id: str, freshness: Freshness) -> bytes | None:
        return await self._reader.get(CUSTOMERS, customer_id)

    async def list_customers(self, page: PageRequest, freshness: Freshness) -> Page:
        return await self._reader.page(CUSTOMERS, page)

    async def get_order(self, order_id: str, freshness: Freshness) -> bytes | None:
        return await self._reader.get(ORDERS, order_id)

    async def list_orders(
        self, page: PageRequest, order_filter: OrderFilter, freshness: Freshness
    ) -> Page:
        filters: list[tuple[str, object]] = []
        if order_filter.customer_id is not None:
            filters.append(("o.customer_id", uuid.UUID(order_filter.customer_id)))
        if order_filter.status is not None:
            filters.append(("o.status", order_filter.status))
        return await self._reader.page(ORDERS, page, filters)
