"""Row <-> protobuf document mapping shared by every PostgreSQL reader.

The read-model tables, the write tables (via JOINs) and the projector's
PostgreSQL store all produce rows with the same column names; these functions
turn such a row into the protobuf message every source returns.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar, cast

import orjson
from google.protobuf.timestamp_pb2 import Timestamp

from common.events import CUSTOMER_FIELDS, ORDER_FIELDS, ORDER_ITEM_FIELDS, PRODUCT_FIELDS
from common.pb.shop.v1 import shop_pb2

M = TypeVar("M", shop_pb2.Product, shop_pb2.Customer)

DOCUMENT_TAIL = ("version", "created_at", "updated_at")


def document_columns(fields: Sequence[str]) -> str:
    """``id``, the entity's fields, then version and timestamps: a document's columns."""
    return ", ".join(("id", *fields, *DOCUMENT_TAIL))


PRODUCT_COLUMNS = document_columns(PRODUCT_FIELDS)
CUSTOMER_COLUMNS = document_columns(CUSTOMER_FIELDS)
ORDER_COLUMNS = document_columns(ORDER_FIELDS)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def timestamp(value: datetime) -> Timestamp:
    """``Timestamp.FromDatetime`` without its cost (a hot path of projection and reads);
    a naive datetime is UTC, as there."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    delta = value - _EPOCH
    micros = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    seconds, rest = divmod(micros, 1_000_000)
    return Timestamp(seconds=seconds, nanos=rest * 1000)


def to_datetime(value: Timestamp) -> datetime:
    """``value.ToDatetime(tzinfo=UTC)`` without its cost."""
    return _EPOCH + timedelta(seconds=value.seconds, microseconds=value.nanos // 1000)


def status_value(name: str) -> shop_pb2.OrderStatus:
    """'PENDING' -> shop_pb2.ORDER_STATUS_PENDING."""
    # The stubs type Value() as int; Order(status=...) wants the enum type.
    return cast("shop_pb2.OrderStatus", shop_pb2.OrderStatus.Value(f"ORDER_STATUS_{name}"))


def payment_status_value(name: str) -> shop_pb2.PaymentStatus:
    """'CAPTURED' -> shop_pb2.PAYMENT_STATUS_CAPTURED."""
    return cast("shop_pb2.PaymentStatus", shop_pb2.PaymentStatus.Value(f"PAYMENT_STATUS_{name}"))


def payment_status_name(value: int) -> str:
    """shop_pb2.PAYMENT_STATUS_CAPTURED -> 'CAPTURED'."""
    return shop_pb2.PaymentStatus.Name(value).removeprefix("PAYMENT_STATUS_")


def status_name(value: int) -> str:
    """shop_pb2.ORDER_STATUS_PENDING -> 'PENDING'."""
    return shop_pb2.OrderStatus.Name(value).removeprefix("ORDER_STATUS_")


def _document(cls: type[M], row: Mapping[str, Any], fields: Sequence[str]) -> M:
    return cls(
        id=str(row["id"]),
        **{f: row[f] for f in fields},
        version=row["version"],
        created_at=timestamp(row["created_at"]),
        updated_at=timestamp(row["updated_at"]),
    )


def product_from_row(row: Mapping[str, Any]) -> shop_pb2.Product:
    return _document(shop_pb2.Product, row, PRODUCT_FIELDS)


def customer_from_row(row: Mapping[str, Any]) -> shop_pb2.Customer:
    return _document(shop_pb2.Customer, row, CUSTOMER_FIELDS)


def order_item(item: Mapping[str, Any]) -> shop_pb2.OrderItem:
    values = {f: item[f] for f in ORDER_ITEM_FIELDS}
    values["product_id"] = str(values["product_id"])  # a UUID from a write-model row
    return shop_pb2.OrderItem(**values)


def order_from_row(row: Mapping[str, Any]) -> shop_pb2.Order:
    """``row["items"]`` is a list of item mappings or its JSON text, in line order."""
    raw_items: Sequence[Mapping[str, Any]] | str = row["items"]
    items: Sequence[Mapping[str, Any]] = (
        orjson.loads(raw_items) if isinstance(raw_items, str) else raw_items
    )
    return shop_pb2.Order(
        id=str(row["id"]),
        order_number=row["order_number"],
        customer_id=str(row["customer_id"]),
        customer_name=row["customer_name"],
        customer_email=row["customer_email"],
        items=[order_item(i) for i in items],
        total_cents=row["total_cents"],
        currency=row["currency"],
        status=status_value(row["status"]),
        payment_status=payment_status_value(row["payment_status"]),
        version=row["version"],
        created_at=timestamp(row["created_at"]),
        updated_at=timestamp(row["updated_at"]),
    )


def items_to_json(order: shop_pb2.Order) -> str:
    """The ``items`` jsonb column of ``order_read_model``."""
    items = [{f: getattr(i, f) for f in ORDER_ITEM_FIELDS} for i in order.items]
    return orjson.dumps(items).decode()
