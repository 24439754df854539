"""The analytics figures computed live from the write tables (SOURCE_WRITE_MODEL).

The definitions every source must agree with (the materialized tables the projector
keeps, see ``projector.analytics``): an order counts from ``OrderPlaced`` until it is
cancelled or deleted; amounts are per currency; months are UTC calendar months; a
customer is *new* in the month of its first counting order and *returning* in every
later month it has a counting order in; ties are broken by id, then currency.
Deleted customers and products have no stats and are left out of the top lists (their
orders still count in the months). A *payment* counts for its order's customer, in the
order's currency, while the order is not deleted and its ``payment_status`` is CAPTURED
(cancelled or not: only the refund takes it out); its amount is the order's total (the
write side captures exactly that).
"""

from __future__ import annotations

COUNTING = "o.deleted_at IS NULL AND o.status <> 'CANCELLED'"
PAID = "o.payment_status = 'CAPTURED'"  # of an order not deleted: its payment counts

CUSTOMER_EXISTS = "SELECT 1 FROM customers WHERE id = $1 AND deleted_at IS NULL"

CUSTOMER_TOTALS = f"""
SELECT count(*) FILTER (WHERE o.status <> 'CANCELLED') AS total_orders,
       count(*) FILTER (WHERE o.status = 'CANCELLED') AS cancelled_orders,
       min(o.created_at) FILTER (WHERE o.status <> 'CANCELLED') AS first_order_at,
       max(o.created_at) FILTER (WHERE o.status <> 'CANCELLED') AS last_order_at,
       count(*) FILTER (WHERE {PAID}) AS total_payments
FROM orders o WHERE o.customer_id = $1 AND o.deleted_at IS NULL
"""

# A currency has a row while the customer has a counting order or a payment in it.
_CURRENCY_FIGURES = f"""
       count(*) FILTER (WHERE o.status <> 'CANCELLED') AS orders,
       coalesce(sum(o.total_cents) FILTER (WHERE o.status <> 'CANCELLED'), 0)::bigint
         AS value_cents,
       count(*) FILTER (WHERE {PAID}) AS payments,
       coalesce(sum(o.total_cents) FILTER (WHERE {PAID}), 0)::bigint AS paid_cents
"""
_CURRENCY_ORDERS = f"o.deleted_at IS NULL AND (o.status <> 'CANCELLED' OR {PAID})"

CUSTOMER_CURRENCIES = f"""
SELECT o.currency, {_CURRENCY_FIGURES}
FROM orders o WHERE o.customer_id = $1 AND {_CURRENCY_ORDERS}
GROUP BY o.currency ORDER BY o.currency
"""

PRODUCT_EXISTS = "SELECT 1 FROM products WHERE id = $1 AND deleted_at IS NULL"

PRODUCT_CURRENCIES = f"""
SELECT o.currency, sum(i.quantity)::bigint AS units_sold, count(DISTINCT o.id) AS orders_count,
       sum(i.line_total_cents)::bigint AS revenue_cents, max(o.created_at) AS last_sold_at
FROM order_items i JOIN orders o ON o.id = i.order_id
WHERE i.product_id = $1 AND {COUNTING}
GROUP BY o.currency ORDER BY o.currency
"""

PRODUCT_TOP_CUSTOMER = f"""
SELECT o.customer_id::text AS customer_id
FROM order_items i JOIN orders o ON o.id = i.order_id
WHERE i.product_id = $1 AND {COUNTING}
GROUP BY o.customer_id ORDER BY sum(i.quantity) DESC, o.customer_id LIMIT 1
"""

# {order}: "revenue_cents" or "units_sold"; $1 limit, $2 currency or NULL for all.
TOP_PRODUCTS = f"""
SELECT i.product_id::text AS product_id, o.currency, sum(i.quantity)::bigint AS units_sold,
       sum(i.line_total_cents)::bigint AS revenue_cents, count(DISTINCT o.id) AS orders_count
FROM order_items i JOIN orders o ON o.id = i.order_id JOIN products p ON p.id = i.product_id
WHERE {COUNTING} AND p.deleted_at IS NULL AND ($2::text IS NULL OR o.currency = $2)
GROUP BY i.product_id, o.currency
ORDER BY {{order}} DESC, i.product_id, o.currency LIMIT $1
"""

TOP_CUSTOMERS = f"""
SELECT o.customer_id::text AS customer_id, o.currency, count(*) AS orders,
       sum(o.total_cents)::bigint AS value_cents
FROM orders o JOIN customers c ON c.id = o.customer_id
WHERE {COUNTING} AND c.deleted_at IS NULL AND ($2::text IS NULL OR o.currency = $2)
GROUP BY o.customer_id, o.currency
ORDER BY value_cents DESC, o.customer_id, o.currency LIMIT $1
"""

# $1, $2: first days of the first and last month; $3 currency or NULL.
MONTHS = f"""
WITH counting AS (
  SELECT o.customer_id, o.currency, o.total_cents,
         date_trunc('month', o.created_at AT TIME ZONE 'UTC')::date AS month
  FROM orders o WHERE {COUNTING}
), firsts AS (
  SELECT customer_id, min(month) AS first_month FROM counting GROUP BY customer_id
)
SELECT c.month, c.currency, count(*) AS orders, sum(c.total_cents)::bigint AS revenue_cents,
       count(DISTINCT c.customer_id) FILTER (WHERE c.month = f.first_month) AS new_customers,
       count(DISTINCT c.customer_id) FILTER (WHERE c.month > f.first_month)
         AS returning_customers
FROM counting c JOIN firsts f USING (customer_id)
WHERE c.month BETWEEN $1 AND $2 AND ($3::text IS NULL OR c.currency = $3)
GROUP BY c.month, c.currency ORDER BY c.month, c.currency
"""

# The snapshot the figures come from: its horizon and last event, and its time.
SNAPSHOT = """
SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint AS xid,
       (SELECT seq FROM events ORDER BY seq DESC LIMIT 1) AS seq,
       now() AS current_to
"""

# For `cqrs projector verify`: every live customer's and product's totals at once.
ALL_CUSTOMER_TOTALS = f"""
SELECT c.id::text AS id,
       count(o.id) FILTER (WHERE o.status <> 'CANCELLED') AS total_orders,
       count(o.id) FILTER (WHERE o.status = 'CANCELLED') AS cancelled_orders,
       min(o.created_at) FILTER (WHERE o.status <> 'CANCELLED') AS first_order_at,
       max(o.created_at) FILTER (WHERE o.status <> 'CANCELLED') AS last_order_at,
       count(o.id) FILTER (WHERE {PAID}) AS total_payments
FROM customers c LEFT JOIN orders o ON o.customer_id = c.id AND o.deleted_at IS NULL
WHERE c.deleted_at IS NULL GROUP BY c.id ORDER BY c.id
"""

# Every live customer's rows by currency (GetCustomerStats' by_currency, payments included).
ALL_CUSTOMER_CURRENCIES = f"""
SELECT o.customer_id::text AS id, o.currency, {_CURRENCY_FIGURES}
FROM orders o JOIN customers c ON c.id = o.customer_id
WHERE c.deleted_at IS NULL AND {_CURRENCY_ORDERS}
GROUP BY o.customer_id, o.currency ORDER BY o.customer_id, o.currency
"""

ALL_PRODUCT_TOTALS = f"""
SELECT p.id::text AS id, coalesce(s.units_sold, 0) AS units_sold,
       coalesce(s.orders_count, 0) AS orders_count, s.last_sold_at
FROM products p LEFT JOIN (
  SELECT i.product_id, sum(i.quantity)::bigint AS units_sold,
         count(DISTINCT o.id) AS orders_count, max(o.created_at) AS last_sold_at
  FROM order_items i JOIN orders o ON o.id = i.order_id WHERE {COUNTING} GROUP BY i.product_id
) s ON s.product_id = p.id
WHERE p.deleted_at IS NULL ORDER BY p.id
"""
