"""The write model read as documents: one definition for the read server's
SOURCE_WRITE_MODEL (the baseline) and ``cqrs projector verify`` (the check), so
the check compares projections with exactly what the baseline serves.

Each entity is a ``SELECT`` (no WHERE) plus the condition that keeps only live
rows. Orders JOIN the customer for its *current* name and email (even once the
customer is soft-deleted) and aggregate their lines, in ``line_no`` order, as
JSON; the table owning ``id``/``created_at`` of an order is aliased ``o``.
"""

from __future__ import annotations

from common.documents import CUSTOMER_COLUMNS, PRODUCT_COLUMNS

PRODUCTS = f"SELECT {PRODUCT_COLUMNS} FROM products"
PRODUCTS_LIVE = "deleted_at IS NULL"

CUSTOMERS = f"SELECT {CUSTOMER_COLUMNS} FROM customers"
CUSTOMERS_LIVE = "deleted_at IS NULL"

ORDERS = """SELECT o.id, o.order_number, o.customer_id, c.name AS customer_name,
       c.email AS customer_email, COALESCE(i.items, '[]'::json) AS items, o.total_cents,
       o.currency, o.status, o.payment_status, o.version, o.created_at, o.updated_at
  FROM orders o
  JOIN customers c ON c.id = o.customer_id
  LEFT JOIN LATERAL (
    SELECT json_agg(json_build_object(
             'product_id', oi.product_id, 'name', oi.name, 'quantity', oi.quantity,
             'unit_price_cents', oi.unit_price_cents, 'line_total_cents', oi.line_total_cents)
           ORDER BY oi.line_no) AS items
      FROM order_items oi WHERE oi.order_id = o.id) i ON true"""
ORDERS_ALIAS = "o."
ORDERS_LIVE = "o.deleted_at IS NULL"


def all_live(select: str, live: str) -> str:
    """Every live row of one entity."""
    return f"{select} WHERE {live}"
