"""Stored events as ``shop.v1.HistoryEvent`` messages: metadata, and the typed payload
(the ``typed_payload`` oneof) for the event types that have one."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.message import Message

from common import events as ev
from common.documents import order_item, status_value, timestamp
from common.event_log import LoggedEvent
from common.pb.shop.v1 import history_pb2 as hpb
from common.pb.shop.v1 import shop_pb2

Payload = Mapping[str, Any]


def history_event(logged: LoggedEvent) -> hpb.HistoryEvent:
    """One event as clients see it (payload in the current schema)."""
    event, meta = logged.event, logged.metadata
    message = hpb.HistoryEvent(
        event_type=event.event_type,
        version=event.aggregate_version,
        sequence=event.seq,
        occurred_at=timestamp(event.occurred_at),
        payload_json=logged.payload_json(),
        schema_version=logged.schema_version,
        metadata=hpb.EventMetadata(
            request_id=_text(meta.get("request_id")),
            peer=_text(meta.get("peer")),
            user_agent=_text(meta.get("user_agent")),
            subject=_text(meta.get("auth_subject")),
        ),
    )
    typed = typed_payload(event.event_type, event.payload) if logged.readable else None
    if typed is not None:
        field, value = typed
        getattr(message, field).CopyFrom(value)
    return message


def typed_payload(event_type: str, payload: Payload) -> tuple[str, Message] | None:
    """``(oneof field, message)`` for ``payload`` (current schema) of ``event_type``;
    ``None`` for deletions, unknown types, or a payload that does not fit (the JSON
    still shows it: the history is where one looks at odd events)."""
    build = _BUILDERS.get(event_type)
    if build is None:
        return None
    field, make = build
    try:
        return field, make(payload)
    except (KeyError, TypeError, ValueError, AttributeError):
        return None


def _product_created(p: Payload) -> Message:
    return hpb.ProductCreated(**{f: p[f] for f in ev.PRODUCT_FIELDS})


def _product_updated(p: Payload) -> Message:
    changes = _changes(p, ev.PRODUCT_FIELDS)
    return hpb.ProductUpdated(
        changes=shop_pb2.Product(**changes), update_mask=FieldMask(paths=list(changes))
    )


def _stock_changed(p: Payload) -> Message:
    return hpb.ProductStockChanged(order_id=p["order_id"], quantity=p["quantity"], stock=p["stock"])


def _customer_created(p: Payload) -> Message:
    return hpb.CustomerCreated(**{f: p[f] for f in ev.CUSTOMER_FIELDS})


def _customer_updated(p: Payload) -> Message:
    changes = _changes(p, ev.CUSTOMER_FIELDS)
    return hpb.CustomerUpdated(
        changes=shop_pb2.Customer(**changes), update_mask=FieldMask(paths=list(changes))
    )


def _order_placed(p: Payload) -> Message:
    customer = p["customer"]
    return hpb.OrderPlaced(
        order_number=p["order_number"],
        customer_id=customer["id"],
        customer_name=customer["name"],
        customer_email=customer["email"],
        items=[order_item(item) for item in p["items"]],
        total_cents=p["total_cents"],
        currency=p["currency"],
        status=status_value(p["status"]),
    )


def _status_changed(status: str) -> Callable[[Payload], Message]:
    def build(p: Payload) -> Message:
        return hpb.OrderStatusChanged(status=status_value(p.get("status", status)))

    return build


def _changes(p: Payload, allowed: tuple[str, ...]) -> dict[str, Any]:
    changes = p["changes"]
    if not isinstance(changes, dict) or set(changes) - set(allowed):
        raise ValueError("not a changes object of this entity")
    return changes


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


_BUILDERS: dict[str, tuple[str, Callable[[Payload], Message]]] = {
    ev.PRODUCT_CREATED: ("product_created", _product_created),
    ev.PRODUCT_UPDATED: ("product_updated", _product_updated),
    ev.PRODUCT_STOCK_RESERVED: ("product_stock_changed", _stock_changed),
    ev.PRODUCT_STOCK_RELEASED: ("product_stock_changed", _stock_changed),
    ev.CUSTOMER_CREATED: ("customer_created", _customer_created),
    ev.CUSTOMER_UPDATED: ("customer_updated", _customer_updated),
    ev.ORDER_PLACED: ("order_placed", _order_placed),
    ev.ORDER_CONFIRMED: ("order_status_changed", _status_changed("CONFIRMED")),
    ev.ORDER_SHIPPED: ("order_status_changed", _status_changed("SHIPPED")),
    ev.ORDER_DELIVERED: ("order_status_changed", _status_changed("DELIVERED")),
    ev.ORDER_CANCELLED: ("order_status_changed", _status_changed("CANCELLED")),
}
