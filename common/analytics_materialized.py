"""SQL over the ``analytics`` schema (kept by the projector's ``pg:analytics``; read by the
read server's SOURCE_READ_MODEL and by ``cqrs projector verify``): each
figure is a key lookup or a walk down an index, whatever the number of orders."""

from __future__ import annotations

PROJECTION = "pg:analytics"

# The checkpoint, and the last event at or before it in commit order (its sequence and
# time): everything up to there is in the figures.
FRESHNESS = """
SELECT c.xid, c.seq, e.seq AS last_seq, e.occurred_at
FROM read.projection_checkpoints c
LEFT JOIN LATERAL (
  SELECT v.seq, v.occurred_at FROM events v
  WHERE (v.xid, v.seq) <= (c.xid::text::xid8, c.seq)
  ORDER BY v.xid DESC, v.seq DESC LIMIT 1
) e ON true
WHERE c.projection = $1
"""

CUSTOMER = """
SELECT deleted, total_orders, cancelled_orders, first_order_at, last_order_at, total_payments
FROM analytics.customers WHERE customer_id = $1
"""

# A currency has a row while the customer has a counting order or a payment in it.
CUSTOMER_CURRENCIES = """
SELECT currency, orders, value_cents, payments, paid_cents FROM analytics.customer_currencies
WHERE customer_id = $1 AND (orders > 0 OR payments > 0) ORDER BY currency
"""

PRODUCT = """
SELECT deleted, units_sold, orders_count, last_sold_at FROM analytics.products
WHERE product_id = $1
"""

PRODUCT_CURRENCIES = """
SELECT currency, units_sold, orders_count, revenue_cents FROM analytics.product_currencies
WHERE product_id = $1 AND orders_count > 0 ORDER BY currency
"""

PRODUCT_TOP_CUSTOMER = """
SELECT customer_id::text FROM analytics.product_customers
WHERE product_id = $1 AND units > 0 ORDER BY units DESC, customer_id LIMIT 1
"""

_TOP_PRODUCTS = """
SELECT pc.product_id::text AS product_id, pc.currency, pc.units_sold, pc.revenue_cents,
       pc.orders_count
FROM analytics.product_currencies pc JOIN analytics.products p USING (product_id)
WHERE pc.orders_count > 0 AND NOT p.deleted AND ($2::text IS NULL OR pc.currency = $2)
ORDER BY pc.{order} DESC, pc.product_id, pc.currency LIMIT $1
"""
TOP_PRODUCTS_BY_REVENUE = _TOP_PRODUCTS.format(order="revenue_cents")
TOP_PRODUCTS_BY_UNITS = _TOP_PRODUCTS.format(order="units_sold")

TOP_CUSTOMERS = """
SELECT cc.customer_id::text AS customer_id, cc.currency, cc.orders, cc.value_cents
FROM analytics.customer_currencies cc JOIN analytics.customers c USING (customer_id)
WHERE cc.orders > 0 AND NOT c.deleted AND ($2::text IS NULL OR cc.currency = $2)
ORDER BY cc.value_cents DESC, cc.customer_id, cc.currency LIMIT $1
"""

MONTHS = """
SELECT month, currency, orders, revenue_cents, new_customers, returning_customers
FROM analytics.months
WHERE month BETWEEN $1 AND $2 AND orders > 0 AND ($3::text IS NULL OR currency = $3)
ORDER BY month, currency
"""

ALL_CUSTOMER_TOTALS = """
SELECT customer_id::text AS id, total_orders, cancelled_orders, first_order_at, last_order_at,
       total_payments
FROM analytics.customers WHERE NOT deleted ORDER BY customer_id
"""

ALL_CUSTOMER_CURRENCIES = """
SELECT cc.customer_id::text AS id, cc.currency, cc.orders, cc.value_cents, cc.payments,
       cc.paid_cents
FROM analytics.customer_currencies cc JOIN analytics.customers c USING (customer_id)
WHERE NOT c.deleted AND (cc.orders > 0 OR cc.payments > 0) ORDER BY cc.customer_id, cc.currency
"""

ALL_PRODUCT_TOTALS = """
SELECT product_id::text AS id, units_sold, orders_count, last_sold_at
FROM analytics.products WHERE NOT deleted ORDER BY product_id
"""
