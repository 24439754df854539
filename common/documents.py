"""Row <-> protobuf document mapping shared by every PostgreSQL reader.

The read-model tables, the write tables (via JOINs) and the projector's
PostgreSQL store all produce rows with the same column names; these functions
turn such a row into the protobuf message every source returns.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, cast

from google.protobuf.timestamp_pb2 import Timestamp

from common.pb.shop.v1 import shop_pb2

PRODUCT_COLUMNS = (
    "id, name, description, price_cents, currency, category, stock, version, created_at, updated_at"
)
CUSTOMER_COLUMNS = (
    "id, name, email, address, city, postal_code, country, version, created_at, updated_at"
)


def timestamp(value: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(value)
    return ts


def status_value(name: str) -> shop_pb2.OrderStatus:
    """'PENDING' -> shop_pb2.ORDER_STATUS_PENDING."""
    # The stubs type Value() as int; Order(status=...) wants the enum type.
    return cast("shop_pb2.OrderStatus", shop_pb2.OrderStatus.Value(f"ORDER_STATUS_{name}"))


def status_name(value: int) -> str:
    """shop_pb2.ORDER_STATUS_PENDING -> 'PENDING'."""
    return shop_pb2.OrderStatus.Name(value).removeprefix("ORDER_STATUS_")


def product_from_row(row: Mapping[str, Any]) -> shop_pb2.Product:
    return shop_pb2.Product(
        id=str(row["id"]),
        name=row["name"],
        description=row["description"],
        price_cents=row["price_cents"],
        currency=row["currency"],
        category=row["category"],
        stock=row["stock"],
        version=row["version"],
        created_at=timestamp(row["created_at"]),
        updated_at=timestamp(row["updated_at"]),
    )


def customer_from_row(row: Mapping[str, Any]) -> shop_pb2.Customer:
    return shop_pb2.Customer(
        id=str(row["id"]),
        name=row["name"],
        email=row["email"],
        address=row["address"],
        city=row["city"],
        postal_code=row["postal_code"],
        country=row["country"],
        version=row["version"],
        created_at=timestamp(row["created_at"]),
        updated_at=timestamp(row["updated_at"]),
    )


def order_item(item: Mapping[str, Any]) -> shop_pb2.OrderItem:
    return shop_pb2.OrderItem(
        product_id=str(item["product_id"]),
        name=item["name"],
        quantity=item["quantity"],
        unit_price_cents=item["unit_price_cents"],
        line_total_cents=item["line_total_cents"],
    )


def order_from_row(row: Mapping[str, Any]) -> shop_pb2.Order:
    """``row["items"]`` is a list of item mappings or its JSON text, in line order."""
    raw_items: Sequence[Mapping[str, Any]] | str = row["items"]
    items: Sequence[Mapping[str, Any]] = (
        json.loads(raw_items) if isinstance(raw_items, str) else raw_items
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
        version=row["version"],
        created_at=timestamp(row["created_at"]),
        updated_at=timestamp(row["updated_at"]),
    )


def items_to_json(order: shop_pb2.Order) -> str:
    """The ``items`` jsonb column of ``order_read_model``."""
    return json.dumps(
        [
            {
                "product_id": i.product_id,
                "name": i.name,
                "quantity": i.quantity,
                "unit_price_cents": i.unit_price_cents,
                "line_total_cents": i.line_total_cents,
            }
            for i in order.items
        ]
    )
