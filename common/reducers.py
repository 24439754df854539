"""Pure reducers: ``(current document | None, event) -> new document | None``.

Both stores use these. Inputs are never mutated (a changed document is a new
message). Rules, shared by every event type:

- ``event.aggregate_version <= doc.version``: already applied, return ``doc`` unchanged;
- ``*Created`` / ``OrderPlaced`` need no document and set ``created_at`` and
  ``updated_at`` from ``occurred_at``; every other event needs the document at
  exactly the previous version (the event log has no gaps per aggregate), sets
  ``version`` and ``updated_at``;
- ``*Deleted`` returns ``None`` (the document is removed);
- anything else (unknown event, missing document, version gap, malformed or
  unreadable payload) raises :class:`ReducerError` (to the projector: a poison event).

Payloads are in the current schema (``common.events``): readers upcast rows first
(``common.event_log``). The projector and the read server's time travel share them.

:func:`apply_customer_contact` is the orders projection's fan-out of
``CustomerUpdated`` (the write model shows the live customer name/email on orders).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from google.protobuf.message import Message

from common import events as ev
from common.documents import order_item, payment_status_value, status_value, timestamp
from common.events import CUSTOMER_FIELDS, PRODUCT_FIELDS, UNREADABLE_PAYLOAD, StoredEvent
from common.pb.shop.v1 import shop_pb2

Product = shop_pb2.Product
Customer = shop_pb2.Customer
Order = shop_pb2.Order

CUSTOMER_CONTACT_FIELDS = {"name": "customer_name", "email": "customer_email"}

D = TypeVar("D", Product, Customer, Order)


class ReducerError(Exception):
    """An event cannot be applied to the document it targets."""

    def __init__(self, event: StoredEvent, reason: str) -> None:
        super().__init__(
            f"{event.event_type} seq={event.seq} aggregate={event.aggregate_id} "
            f"v{event.aggregate_version}: {reason}"
        )
        self.event = event
        self.reason = reason


def reduce_product(doc: Product | None, event: StoredEvent) -> Product | None:
    """Apply a Product event to a product document."""
    return _reduce(Product, doc, event, _product_change)


def reduce_customer(doc: Customer | None, event: StoredEvent) -> Customer | None:
    """Apply a Customer event to a customer document."""
    return _reduce(Customer, doc, event, _customer_change)


def reduce_order(doc: Order | None, event: StoredEvent) -> Order | None:
    """Apply an Order event to an order document."""
    return _reduce(Order, doc, event, _order_change)


def reduce_document(doc: Message | None, event: StoredEvent) -> Message | None:
    """Dispatch on ``event.aggregate_type`` (the document must be of the matching type)."""
    if event.aggregate_type == ev.PRODUCT:
        return reduce_product(_as(Product, doc, event), event)
    if event.aggregate_type == ev.CUSTOMER:
        return reduce_customer(_as(Customer, doc, event), event)
    if event.aggregate_type == ev.ORDER:
        return reduce_order(_as(Order, doc, event), event)
    raise ReducerError(event, f"unknown aggregate type {event.aggregate_type!r}")


def customer_contact(event: StoredEvent) -> dict[str, str]:
    """The order fields a ``CustomerUpdated`` rewrites (``{}`` if name/email unchanged)."""
    if event.event_type != ev.CUSTOMER_UPDATED:
        return {}
    changes = _changes(event, CUSTOMER_FIELDS)
    return {
        order_field: _str(event, changes[field])
        for field, order_field in CUSTOMER_CONTACT_FIELDS.items()
        if field in changes
    }


def apply_customer_contact(order: Order, event: StoredEvent) -> Order:
    """Fan-out: the order with the customer's new name/email; version and
    ``updated_at`` stay (the order itself did not change)."""
    if order.customer_id != event.aggregate_id:
        raise ReducerError(event, f"order {order.id} belongs to customer {order.customer_id}")
    contact = customer_contact(event)
    if all(getattr(order, f) == v for f, v in contact.items()):
        return order
    new = Order()
    new.CopyFrom(order)
    for order_field, value in contact.items():
        setattr(new, order_field, value)
    return new


# -- internals ---------------------------------------------------------------------------------


def _reduce(
    cls: type[D],
    doc: D | None,
    event: StoredEvent,
    change: Callable[[D, StoredEvent], None],
) -> D | None:
    if doc is not None and event.aggregate_version <= doc.version:
        return doc  # already applied: replays are no-ops
    if UNREADABLE_PAYLOAD in event.payload:
        raise ReducerError(event, f"unreadable payload: {event.payload[UNREADABLE_PAYLOAD]}")
    kind = event.event_type
    if kind in (ev.PRODUCT_CREATED, ev.CUSTOMER_CREATED, ev.ORDER_PLACED):
        if doc is not None:
            raise ReducerError(event, f"document already exists at v{doc.version}")
        new = cls(id=event.aggregate_id, created_at=timestamp(event.occurred_at))
    else:
        if doc is None:
            raise ReducerError(event, "no document to apply it to")
        if event.aggregate_version != doc.version + 1:
            raise ReducerError(event, f"version gap: document is at v{doc.version}")
        if kind in (ev.PRODUCT_DELETED, ev.CUSTOMER_DELETED, ev.ORDER_DELETED):
            return None
        new = cls()
        new.CopyFrom(doc)
    try:
        change(new, event)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        # Malformed payloads surface as these from dict access and protobuf setters.
        raise ReducerError(event, f"bad payload: {type(exc).__name__}: {exc}") from exc
    new.version = event.aggregate_version
    new.updated_at.CopyFrom(timestamp(event.occurred_at))
    return new


def _product_change(doc: Product, event: StoredEvent) -> None:
    kind, payload = event.event_type, event.payload
    if kind == ev.PRODUCT_CREATED:
        _set_fields(doc, event, {f: payload[f] for f in PRODUCT_FIELDS})
    elif kind == ev.PRODUCT_UPDATED:
        _set_fields(doc, event, _changes(event, PRODUCT_FIELDS))
    elif kind in (ev.PRODUCT_STOCK_RESERVED, ev.PRODUCT_STOCK_RELEASED):
        doc.stock = payload["stock"]
    else:
        raise ReducerError(event, "not a Product event")


def _customer_change(doc: Customer, event: StoredEvent) -> None:
    kind, payload = event.event_type, event.payload
    if kind == ev.CUSTOMER_CREATED:
        _set_fields(doc, event, {f: payload[f] for f in CUSTOMER_FIELDS})
    elif kind == ev.CUSTOMER_UPDATED:
        _set_fields(doc, event, _changes(event, CUSTOMER_FIELDS))
    else:
        raise ReducerError(event, "not a Customer event")


_ORDER_STATUS_EVENTS = {
    ev.ORDER_CONFIRMED: "CONFIRMED",
    ev.ORDER_SHIPPED: "SHIPPED",
    ev.ORDER_DELIVERED: "DELIVERED",
    ev.ORDER_CANCELLED: "CANCELLED",
}


def _order_change(doc: Order, event: StoredEvent) -> None:
    kind, payload = event.event_type, event.payload
    if kind == ev.ORDER_PLACED:
        customer = payload["customer"]
        doc.order_number = payload["order_number"]
        doc.customer_id = _str(event, customer["id"])
        doc.customer_name = customer["name"]
        doc.customer_email = customer["email"]
        doc.items.extend(order_item(item) for item in payload["items"])
        doc.total_cents = payload["total_cents"]
        doc.currency = payload["currency"]
        doc.status = status_value(payload["status"])
    elif kind in _ORDER_STATUS_EVENTS:
        status = payload.get("status", _ORDER_STATUS_EVENTS[kind])
        if status != _ORDER_STATUS_EVENTS[kind]:
            raise ReducerError(event, f"status {status!r} contradicts the event type")
        doc.status = status_value(status)
    elif kind in ev.PAYMENT_EVENT_STATUS:
        doc.payment_status = payment_status_value(ev.PAYMENT_EVENT_STATUS[kind])
    else:
        raise ReducerError(event, "not an Order event")


def _changes(event: StoredEvent, allowed: tuple[str, ...]) -> Mapping[str, Any]:
    changes = event.payload.get("changes")
    if not isinstance(changes, dict):
        raise ReducerError(event, "payload has no 'changes' object")
    unknown = set(changes) - set(allowed)
    if unknown:
        raise ReducerError(event, f"unknown fields in changes: {sorted(unknown)}")
    return changes


def _set_fields(doc: Message, event: StoredEvent, values: Mapping[str, Any]) -> None:
    for field, value in values.items():
        if value is None:
            raise ReducerError(event, f"{field} is null")
        setattr(doc, field, value)


def _str(event: StoredEvent, value: Any) -> str:
    if not isinstance(value, str):
        raise ReducerError(event, f"expected a string, got {value!r}")
    return value


def _as(cls: type[D], doc: Message | None, event: StoredEvent) -> D | None:
    if doc is None or isinstance(doc, cls):
        return doc
    raise ReducerError(event, f"document is a {type(doc).__name__}, not a {cls.__name__}")
