"""The event log contract shared by the write side (producer) and the projector.

Each row of the ``events`` table is one domain event. ``aggregate_version`` is
the aggregate's version *after* the event (each event adds one); every event of
one command shares its ``occurred_at``, which is also the aggregate's
``updated_at`` (and ``created_at`` for ``*Created``/``OrderPlaced``).

Payloads (JSON objects; money in integer cents, ids as canonical UUID strings):

- ``ProductCreated``      {name, description, price_cents, currency, category, stock}
- ``ProductUpdated``      {changes: {<any of the ProductCreated fields>: new value}}
- ``ProductStockReserved`` {order_id, quantity, stock}  (stock = new stock)
- ``ProductStockReleased`` {order_id, quantity, stock}
- ``ProductDeleted``      {}
- ``CustomerCreated``     {name, email, address, city, postal_code, country}
- ``CustomerUpdated``     {changes: {<any of the CustomerCreated fields>: new value}}
- ``CustomerDeleted``     {}
- ``OrderPlaced`` (v2)    {order_number, customer: {id, name, email},
                           items: [{product_id, name, quantity, unit_price_cents,
                           line_total_cents}], total_cents, currency, status}
- ``OrderConfirmed`` / ``OrderShipped`` / ``OrderDelivered`` / ``OrderCancelled``  {status}
- ``OrderDeleted``        {}
- Payments (Order events; only while the write server has ``CQRS_PAYMENTS_URL``):
  ``PaymentRequested`` {amount_cents, currency, attempt} (with ``OrderConfirmed``),
  ``PaymentCaptured`` {provider_charge_id, amount_cents, currency},
  ``PaymentFailed`` {reason, retryable},
  ``RefundRequested`` {provider_charge_id, amount_cents} (a captured order cancelled),
  ``PaymentRefunded`` {provider_refund_id, amount_cents}
- ``WebhookSubscriptionCreated`` {url, event_types: [event type], description}
- ``WebhookSubscriptionDisabled`` / ``WebhookSecretRotated`` {}  (the secret itself is
  never in the log: it lives in the ``webhook_subscriptions`` write table only)

``status`` is one of PENDING, CONFIRMED, SHIPPED, DELIVERED, CANCELLED.

Schema versions. Every row stores the ``schema_version`` of its payload;
:data:`SCHEMA_VERSIONS` is what the write side emits today. Readers never see an
old shape: :func:`common.upcasting.upcast` lifts a stored payload to the current
version, one step at a time. Earlier versions, kept here because the log holds them:

- ``OrderPlaced`` v1      {order_number, customer_id, customer_name, customer_email,
                           items, total_cents, currency, status} (the customer flat;
                           v2 groups it as ``customer``)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType
from typing import Any

from common.positions import Position

PRODUCT = "Product"
CUSTOMER = "Customer"
ORDER = "Order"
WEBHOOK_SUBSCRIPTION = "WebhookSubscription"
# Every aggregate type in the log (relays publish them all).
AGGREGATE_TYPES = (PRODUCT, CUSTOMER, ORDER, WEBHOOK_SUBSCRIPTION)

PRODUCT_CREATED = "ProductCreated"
PRODUCT_UPDATED = "ProductUpdated"
PRODUCT_STOCK_RESERVED = "ProductStockReserved"
PRODUCT_STOCK_RELEASED = "ProductStockReleased"
PRODUCT_DELETED = "ProductDeleted"
CUSTOMER_CREATED = "CustomerCreated"
CUSTOMER_UPDATED = "CustomerUpdated"
CUSTOMER_DELETED = "CustomerDeleted"
ORDER_PLACED = "OrderPlaced"
ORDER_CONFIRMED = "OrderConfirmed"
ORDER_SHIPPED = "OrderShipped"
ORDER_DELIVERED = "OrderDelivered"
ORDER_CANCELLED = "OrderCancelled"
ORDER_DELETED = "OrderDeleted"
PAYMENT_REQUESTED = "PaymentRequested"
PAYMENT_CAPTURED = "PaymentCaptured"
PAYMENT_FAILED = "PaymentFailed"
REFUND_REQUESTED = "RefundRequested"
PAYMENT_REFUNDED = "PaymentRefunded"
WEBHOOK_SUBSCRIPTION_CREATED = "WebhookSubscriptionCreated"
WEBHOOK_SUBSCRIPTION_DISABLED = "WebhookSubscriptionDisabled"
WEBHOOK_SECRET_ROTATED = "WebhookSecretRotated"

ORDER_STATUSES = ("PENDING", "CONFIRMED", "SHIPPED", "DELIVERED", "CANCELLED")
# An order's payment_status (shop.v1.PaymentStatus without its prefix); UNPAID first.
PAYMENT_STATUSES = ("UNPAID", "PENDING", "CAPTURED", "FAILED", "REFUNDED")
# The payment events and the payment_status each leaves the order in (RefundRequested
# leaves it CAPTURED: the money is still taken until the refund is done).
PAYMENT_EVENT_STATUS: Mapping[str, str] = MappingProxyType(
    {
        PAYMENT_REQUESTED: "PENDING",
        PAYMENT_CAPTURED: "CAPTURED",
        PAYMENT_FAILED: "FAILED",
        REFUND_REQUESTED: "CAPTURED",
        PAYMENT_REFUNDED: "REFUNDED",
    }
)

# Each entity's own fields, defined once: the payload of its *Created event, the keys an
# *Updated event may change, the columns of its tables and the fields of its protobuf
# document (which adds id, version, created_at and updated_at to every entity).
PRODUCT_FIELDS = ("name", "description", "price_cents", "currency", "category", "stock")
CUSTOMER_FIELDS = ("name", "email", "address", "city", "postal_code", "country")
ORDER_ITEM_FIELDS = ("product_id", "name", "quantity", "unit_price_cents", "line_total_cents")
# An order document's own fields (items are ORDER_ITEM_FIELDS objects). OrderPlaced v1
# carried these but payment_status; v2 carries customer_* as ``customer: {id, name, email}``.
# payment_status is UNPAID from OrderPlaced on; the payment events change it.
ORDER_FIELDS = (
    "order_number", "customer_id", "customer_name", "customer_email", "items", "total_cents",
    "currency", "status", "payment_status",
)  # fmt: skip

# The event types a webhook can subscribe to: the shop's own (a subscription's events are
# configuration, never delivered).
SUBSCRIBABLE_EVENT_TYPES = (
    PRODUCT_CREATED, PRODUCT_UPDATED, PRODUCT_STOCK_RESERVED, PRODUCT_STOCK_RELEASED,
    PRODUCT_DELETED, CUSTOMER_CREATED, CUSTOMER_UPDATED, CUSTOMER_DELETED, ORDER_PLACED,
    ORDER_CONFIRMED, ORDER_SHIPPED, ORDER_DELIVERED, ORDER_CANCELLED, ORDER_DELETED,
    PAYMENT_REQUESTED, PAYMENT_CAPTURED, PAYMENT_FAILED, REFUND_REQUESTED, PAYMENT_REFUNDED,
)  # fmt: skip

# The schema version each event type is written with today (see common/upcasting.py for
# how older rows are read). Bump one only together with an upcaster from the old version.
SCHEMA_VERSIONS: Mapping[str, int] = MappingProxyType(
    {
        PRODUCT_CREATED: 1,
        PRODUCT_UPDATED: 1,
        PRODUCT_STOCK_RESERVED: 1,
        PRODUCT_STOCK_RELEASED: 1,
        PRODUCT_DELETED: 1,
        CUSTOMER_CREATED: 1,
        CUSTOMER_UPDATED: 1,
        CUSTOMER_DELETED: 1,
        ORDER_PLACED: 2,
        ORDER_CONFIRMED: 1,
        ORDER_SHIPPED: 1,
        ORDER_DELIVERED: 1,
        ORDER_CANCELLED: 1,
        ORDER_DELETED: 1,
        PAYMENT_REQUESTED: 1,
        PAYMENT_CAPTURED: 1,
        PAYMENT_FAILED: 1,
        REFUND_REQUESTED: 1,
        PAYMENT_REFUNDED: 1,
        WEBHOOK_SUBSCRIPTION_CREATED: 1,
        WEBHOOK_SUBSCRIPTION_DISABLED: 1,
        WEBHOOK_SECRET_ROTATED: 1,
    }
)

# A payload its readers could not parse or upcast is replaced by {UNREADABLE_PAYLOAD: why}
# (see common.event_log), so the reducers reject the event (a poison event to the
# projector) instead of reading a shape they do not know.
UNREADABLE_PAYLOAD = "__unreadable__"

# The channel the write transaction NOTIFYs (last) after appending events.
NOTIFY_CHANNEL = "cqrs_events"


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """One row of the event log as its readers see it: ``payload`` is always in the
    current schema of its type (upcast when the row holds an older one)."""

    seq: int
    xid: int
    aggregate_type: str
    aggregate_id: str
    aggregate_version: int
    event_type: str
    payload: dict[str, Any]
    occurred_at: datetime

    @property
    def position(self) -> Position:
        return Position(self.xid, self.seq)
