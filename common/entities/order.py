"""Orders, listed by customer and/or status; each shows its customer's current name and
email, as the write model's JOIN does, so a ``CustomerUpdated`` rewrites them."""

from __future__ import annotations

from google.protobuf.message import Message

from common import events as ev
from common.documents import order_from_row, order_item, payment_status_value, status_value
from common.entities._columns import columns
from common.entities._model import Embed, Entity, Index, WriteModel
from common.events import CUSTOMER_FIELDS, ORDER_FIELDS, StoredEvent
from common.pb.shop.v1 import shop_pb2
from common.reducers import ReducerError, changes, fold, text

# A customer's fields an order shows, and under which names.
CUSTOMER_CONTACT_FIELDS = {"name": "customer_name", "email": "customer_email"}

_STATUS_EVENTS = {
    ev.ORDER_CONFIRMED: "CONFIRMED",
    ev.ORDER_SHIPPED: "SHIPPED",
    ev.ORDER_DELIVERED: "DELIVERED",
    ev.ORDER_CANCELLED: "CANCELLED",
}


def _change(doc: shop_pb2.Order, event: StoredEvent) -> None:
    kind, payload = event.event_type, event.payload
    if kind == ev.ORDER_PLACED:
        customer = payload["customer"]
        doc.order_number = payload["order_number"]
        doc.customer_id = text(event, customer["id"])
        doc.customer_name = customer["name"]
        doc.customer_email = customer["email"]
        doc.items.extend(order_item(item) for item in payload["items"])
        doc.total_cents = payload["total_cents"]
        doc.currency = payload["currency"]
        doc.status = status_value(payload["status"])
    elif kind in _STATUS_EVENTS:
        status = payload.get("status", _STATUS_EVENTS[kind])
        if status != _STATUS_EVENTS[kind]:
            raise ReducerError(event, f"status {status!r} contradicts the event type")
        doc.status = status_value(status)
    elif kind in ev.PAYMENT_EVENT_STATUS:
        doc.payment_status = payment_status_value(ev.PAYMENT_EVENT_STATUS[kind])
    else:
        raise ReducerError(event, "not an Order event")


def reduce_order(doc: Message | None, event: StoredEvent) -> shop_pb2.Order | None:
    """Apply an Order event to an order document."""
    return fold(
        shop_pb2.Order,
        doc,
        event,
        created=ev.ORDER_PLACED,
        deleted=ev.ORDER_DELETED,
        change=_change,
    )


def customer_contact(event: StoredEvent) -> dict[str, str]:
    """The order fields a ``CustomerUpdated`` rewrites (``{}`` if name/email unchanged)."""
    if event.event_type != ev.CUSTOMER_UPDATED:
        return {}
    changed = changes(event, CUSTOMER_FIELDS)
    return {
        order_field: text(event, changed[field])
        for field, order_field in CUSTOMER_CONTACT_FIELDS.items()
        if field in changed
    }


def apply_customer_contact(order: Message, event: StoredEvent) -> shop_pb2.Order:
    """The order with its customer's new name/email; version and ``updated_at`` stay
    (the order itself did not change)."""
    if not isinstance(order, shop_pb2.Order):
        raise ReducerError(event, f"document is a {type(order).__name__}, not an Order")
    if order.customer_id != event.aggregate_id:
        raise ReducerError(event, f"order {order.id} belongs to customer {order.customer_id}")
    contact = customer_contact(event)
    if all(getattr(order, f) == v for f, v in contact.items()):
        return order
    new = shop_pb2.Order()
    new.CopyFrom(order)
    for order_field, value in contact.items():
        setattr(new, order_field, value)
    return new


ORDERS = Entity(
    name="orders",
    label="order",
    aggregate_type=ev.ORDER,
    document=shop_pb2.Order,
    fields=ORDER_FIELDS,
    reduce=reduce_order,
    folds=frozenset({ev.ORDER_PLACED, *_STATUS_EVENTS, ev.ORDER_DELETED, *ev.PAYMENT_EVENT_STATUS}),
    table="order_read_model",
    columns=columns(shop_pb2.Order, ORDER_FIELDS),
    from_row=order_from_row,
    # The customer's *current* name and email (even once the customer is soft-deleted);
    # the lines, in line_no order, as JSON.
    write_model=WriteModel(
        """SELECT o.id, o.order_number, o.customer_id, c.name AS customer_name,
       c.email AS customer_email, COALESCE(i.items, '[]'::json) AS items, o.total_cents,
       o.currency, o.status, o.payment_status, o.version, o.created_at, o.updated_at
  FROM orders o
  JOIN customers c ON c.id = o.customer_id
  LEFT JOIN LATERAL (
    SELECT json_agg(json_build_object(
             'product_id', oi.product_id, 'name', oi.name, 'quantity', oi.quantity,
             'unit_price_cents', oi.unit_price_cents, 'line_total_cents', oi.line_total_cents)
           ORDER BY oi.line_no) AS items
      FROM order_items oi WHERE oi.order_id = o.id) i ON true""",
        "o.deleted_at IS NULL",
        "o.",
    ),
    indexes=(
        Index("customer", ("customer_id",)),
        Index("status", ("status",)),
        Index("customer_status", ("customer_id", "status")),
    ),
    filters={"customer_id": "uuid", "status": "enum"},
    embeds=(
        Embed(
            ev.CUSTOMER,
            "customer_id",
            frozenset({ev.CUSTOMER_UPDATED}),
            lambda event: bool(customer_contact(event)),
            apply_customer_contact,
        ),
    ),
    # A new customer has no orders yet; a deleted one's orders keep showing its contact.
    ignores=frozenset({ev.CUSTOMER_CREATED, ev.CUSTOMER_DELETED}),
)
