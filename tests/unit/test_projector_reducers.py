"""Reducers: pure, version-guarded, one test per rule."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from common import events as ev
from common.documents import timestamp
from common.entities import reduce_document
from common.entities.customer import reduce_customer
from common.entities.order import apply_customer_contact, customer_contact, reduce_order
from common.entities.product import reduce_product
from common.events import StoredEvent
from common.pb.shop.v1 import shop_pb2
from common.reducers import ReducerError

T0 = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
PID = str(uuid.UUID(int=1))
CID = str(uuid.UUID(int=2))
OID = str(uuid.UUID(int=3))

PRODUCT: dict[str, Any] = {
    "name": "Book",
    "description": "A book",
    "price_cents": 1999,
    "currency": "EUR",
    "category": "books",
    "stock": 5,
}
CUSTOMER: dict[str, Any] = {
    "name": "Ada",
    "email": "ada@example.com",
    "address": "1 Road",
    "city": "London",
    "postal_code": "N1",
    "country": "UK",
}
ITEM: dict[str, Any] = {
    "product_id": PID,
    "name": "Book",
    "quantity": 2,
    "unit_price_cents": 1999,
    "line_total_cents": 3998,
}
PLACED: dict[str, Any] = {
    "order_number": "ORD-000001",
    "customer": {"id": CID, "name": "Ada", "email": "ada@example.com"},
    "items": [ITEM],
    "total_cents": 3998,
    "currency": "EUR",
    "status": "PENDING",
}


def event(
    aggregate_type: str,
    aggregate_id: str,
    version: int,
    event_type: str,
    payload: dict[str, Any],
    minutes: int = 0,
) -> StoredEvent:
    return StoredEvent(
        seq=version,
        xid=100 + version,
        aggregate_type=aggregate_type,
        aggregate_id=aggregate_id,
        aggregate_version=version,
        event_type=event_type,
        payload=payload,
        occurred_at=T0 + timedelta(minutes=minutes),
    )


def product(version: int = 1) -> shop_pb2.Product:
    doc = reduce_product(None, event(ev.PRODUCT, PID, 1, ev.PRODUCT_CREATED, PRODUCT))
    assert doc is not None
    for v in range(2, version + 1):
        doc = reduce_product(doc, event(ev.PRODUCT, PID, v, ev.PRODUCT_UPDATED, {"changes": {}}))
        assert doc is not None
    return doc


def order() -> shop_pb2.Order:
    doc = reduce_order(None, event(ev.ORDER, OID, 1, ev.ORDER_PLACED, PLACED))
    assert doc is not None
    return doc


def test_product_created_sets_every_field_and_both_timestamps() -> None:
    doc = product()
    assert doc == shop_pb2.Product(
        id=PID, version=1, created_at=timestamp(T0), updated_at=timestamp(T0), **PRODUCT
    )


def test_product_updated_changes_only_given_fields_and_updated_at() -> None:
    doc = reduce_product(
        product(), event(ev.PRODUCT, PID, 2, ev.PRODUCT_UPDATED, {"changes": {"price_cents": 5}}, 3)
    )
    assert doc is not None
    assert (doc.price_cents, doc.name, doc.version) == (5, "Book", 2)
    assert doc.created_at == timestamp(T0)
    assert doc.updated_at == timestamp(T0 + timedelta(minutes=3))


@pytest.mark.parametrize("kind", [ev.PRODUCT_STOCK_RESERVED, ev.PRODUCT_STOCK_RELEASED])
def test_stock_events_set_the_new_stock(kind: str) -> None:
    payload = {"order_id": OID, "quantity": 2, "stock": 3}
    doc = reduce_product(product(), event(ev.PRODUCT, PID, 2, kind, payload))
    assert doc is not None and doc.stock == 3 and doc.version == 2


def test_deleted_removes_the_document() -> None:
    assert reduce_product(product(), event(ev.PRODUCT, PID, 2, ev.PRODUCT_DELETED, {})) is None


def test_already_applied_event_is_a_no_op_returning_the_same_document() -> None:
    doc = product(version=3)
    replay = event(ev.PRODUCT, PID, 2, ev.PRODUCT_UPDATED, {"changes": {"name": "Old"}})
    assert reduce_product(doc, replay) is doc
    assert reduce_product(doc, event(ev.PRODUCT, PID, 1, ev.PRODUCT_CREATED, PRODUCT)) is doc
    assert reduce_product(doc, event(ev.PRODUCT, PID, 3, ev.PRODUCT_DELETED, {})) is doc


def test_reducers_do_not_mutate_their_input() -> None:
    doc = product()
    before = doc.SerializeToString()
    reduce_product(doc, event(ev.PRODUCT, PID, 2, ev.PRODUCT_UPDATED, {"changes": {"stock": 0}}))
    assert doc.SerializeToString() == before


def test_customer_created_and_updated() -> None:
    doc = reduce_customer(None, event(ev.CUSTOMER, CID, 1, ev.CUSTOMER_CREATED, CUSTOMER))
    assert doc is not None and doc.email == "ada@example.com" and doc.created_at == timestamp(T0)
    doc = reduce_customer(
        doc, event(ev.CUSTOMER, CID, 2, ev.CUSTOMER_UPDATED, {"changes": {"city": "Paris"}}, 1)
    )
    assert doc is not None and (doc.city, doc.name, doc.version) == ("Paris", "Ada", 2)
    assert reduce_customer(doc, event(ev.CUSTOMER, CID, 3, ev.CUSTOMER_DELETED, {})) is None


def test_order_placed_then_status_changes() -> None:
    doc = order()
    assert doc.status == shop_pb2.ORDER_STATUS_PENDING
    assert list(doc.items) == [shop_pb2.OrderItem(**ITEM)]
    assert (doc.customer_id, doc.total_cents, doc.order_number) == (CID, 3998, "ORD-000001")
    for version, kind, status in [
        (2, ev.ORDER_CONFIRMED, shop_pb2.ORDER_STATUS_CONFIRMED),
        (3, ev.ORDER_SHIPPED, shop_pb2.ORDER_STATUS_SHIPPED),
        (4, ev.ORDER_DELIVERED, shop_pb2.ORDER_STATUS_DELIVERED),
    ]:
        new = reduce_order(doc, event(ev.ORDER, OID, version, kind, {"status": kind[5:].upper()}))
        assert new is not None and new.status == status and new.version == version
        doc = new
    assert reduce_order(doc, event(ev.ORDER, OID, 5, ev.ORDER_DELETED, {})) is None


def test_order_cancelled() -> None:
    doc = reduce_order(
        order(), event(ev.ORDER, OID, 2, ev.ORDER_CANCELLED, {"status": "CANCELLED"})
    )
    assert doc is not None and doc.status == shop_pb2.ORDER_STATUS_CANCELLED


def test_customer_update_fans_out_to_orders_without_touching_version() -> None:
    doc = order()
    update = event(
        ev.CUSTOMER, CID, 2, ev.CUSTOMER_UPDATED, {"changes": {"name": "Ada L.", "city": "X"}}, 9
    )
    assert customer_contact(update) == {"customer_name": "Ada L."}
    new = apply_customer_contact(doc, update)
    assert (new.customer_name, new.customer_email) == ("Ada L.", "ada@example.com")
    assert (new.version, new.updated_at) == (doc.version, doc.updated_at)
    assert doc.customer_name == "Ada"  # input untouched


def test_customer_email_change_fans_out_too() -> None:
    update = event(
        ev.CUSTOMER, CID, 2, ev.CUSTOMER_UPDATED, {"changes": {"email": "new@example.com"}}
    )
    assert customer_contact(update) == {"customer_email": "new@example.com"}
    new = apply_customer_contact(order(), update)
    assert (new.customer_name, new.customer_email) == ("Ada", "new@example.com")


def test_customer_update_without_contact_fields_does_not_fan_out() -> None:
    update = event(ev.CUSTOMER, CID, 2, ev.CUSTOMER_UPDATED, {"changes": {"city": "X"}})
    assert customer_contact(update) == {}
    doc = order()
    assert apply_customer_contact(doc, update) is doc


def test_reduce_document_dispatches_on_aggregate_type() -> None:
    doc = reduce_document(None, event(ev.ORDER, OID, 1, ev.ORDER_PLACED, PLACED))
    assert isinstance(doc, shop_pb2.Order)
    with pytest.raises(ReducerError, match="not a Product"):
        reduce_document(doc, event(ev.PRODUCT, OID, 2, ev.PRODUCT_UPDATED, {"changes": {}}))


@pytest.mark.parametrize(
    ("doc", "bad", "reason"),
    [
        (None, event(ev.PRODUCT, PID, 2, ev.PRODUCT_UPDATED, {"changes": {}}), "no document"),
        (product(), event(ev.PRODUCT, PID, 3, ev.PRODUCT_UPDATED, {"changes": {}}), "version gap"),
        (product(), event(ev.PRODUCT, PID, 2, "ProductExploded", {}), "not a Product event"),
        (product(), event(ev.PRODUCT, PID, 2, ev.PRODUCT_CREATED, PRODUCT), "already exists"),
        (
            product(),
            event(ev.PRODUCT, PID, 2, ev.PRODUCT_UPDATED, {"changes": {"colour": "red"}}),
            "unknown fields",
        ),
        (
            product(),
            event(ev.PRODUCT, PID, 2, ev.PRODUCT_UPDATED, {"changes": {"stock": "many"}}),
            "bad payload",
        ),
        (None, event(ev.PRODUCT, PID, 1, ev.PRODUCT_CREATED, {"name": "x"}), "bad payload"),
        (
            None,
            event(ev.ORDER, OID, 1, ev.ORDER_PLACED, {**PLACED, "status": "LOST"}),
            "bad payload",
        ),
    ],
)
def test_poison_events_raise_reducer_error(
    doc: shop_pb2.Product | None, bad: StoredEvent, reason: str
) -> None:
    with pytest.raises(ReducerError, match=reason):
        reduce_document(doc, bad)
