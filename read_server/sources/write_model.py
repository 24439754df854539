"""SOURCE_WRITE_MODEL: live queries on the write tables (the slow, always-fresh baseline).

Orders JOIN the customer for its *current* name and email (even once the
customer is soft-deleted) and aggregate their lines, in ``line_no`` order, as
JSON. Consistency tokens never wait: the write tables are the truth.
"""

from __future__ import annotations

import uuid

from common.documents import (
    CUSTOMER_COLUMNS,
    PRODUCT_COLUMNS,
    customer_from_row,
    order_from_row,
    product_from_row,
)
from read_server.sources.base import Freshness, OrderFilter, Page, PageRequest
from read_server.sources.pg_queries import EntityQuery, PgReader

_LIVE = ("deleted_at IS NULL",)

PRODUCTS = EntityQuery(f"SELECT {PRODUCT_COLUMNS} FROM products", product_from_row, "", _LIVE)
CUSTOMERS = EntityQuery(f"SELECT {CUSTOMER_COLUMNS} FROM customers", customer_from_row, "", _LIVE)
ORDERS = EntityQuery(
    """SELECT o.id, o.order_number, o.customer_id, c.name AS customer_name,
       c.email AS customer_email, COALESCE(i.items, '[]'::json) AS items, o.total_cents,
       o.currency, o.status, o.version, o.created_at, o.updated_at
  FROM orders o
  JOIN customers c ON c.id = o.customer_id
  LEFT JOIN LATERAL (
    SELECT json_agg(json_build_object(
             'product_id', oi.product_id, 'name', oi.name, 'quantity', oi.quantity,
             'unit_price_cents', oi.unit_price_cents, 'line_total_cents', oi.line_total_cents)
           ORDER BY oi.line_no) AS items
      FROM order_items oi WHERE oi.order_id = o.id) i ON true""",
    order_from_row,
    "o.",
    ("o.deleted_at IS NULL",),
)


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
