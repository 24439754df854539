"""Old events in the log: an ``OrderPlaced`` stored as schema v1 (the customer flat, as
written before v2) is replayed by the projector exactly like a v2 one.

The v1 row is inserted by hand (with its write-model rows, so ``verify`` has something
to compare with); the second test proves the first one depends on the upcaster.
"""

from __future__ import annotations

import io
import uuid
from typing import Any

import pytest

from common import events as ev
from common import upcasting
from common.documents import order_item, status_value, timestamp
from common.pb.shop.v1 import shop_pb2
from projector import verify as verify_module
from projector.bootstrap import App
from projector.projection import Projection
from projector.rebuild import RebuildFailed, rebuild_one
from tests.support.events import NewEvent, Shop, append_events, now
from tests.support.projector import below_the_horizon

pytestmark = pytest.mark.integration

PROJECTIONS = ("pg:orders", "redis:orders")


async def place_v1_order(app: App, customer_id: str, product_id: str) -> tuple[str, Any]:
    """An order whose OrderPlaced row is schema v1; its id and the event's time."""
    oid, at = str(uuid.uuid4()), now()
    async with app.pool.acquire() as conn, conn.transaction():
        customer = await conn.fetchrow(
            "SELECT name, email FROM customers WHERE id = $1", uuid.UUID(customer_id)
        )
        product = await conn.fetchrow(
            "UPDATE products SET stock = stock - 2, version = version + 1, updated_at = $2 "
            "WHERE id = $1 RETURNING name, price_cents, stock, version",
            uuid.UUID(product_id),
            at,
        )
        item = {
            "product_id": product_id,
            "name": product["name"],
            "quantity": 2,
            "unit_price_cents": product["price_cents"],
            "line_total_cents": 2 * product["price_cents"],
        }
        await conn.execute(
            "INSERT INTO orders (id, order_number, customer_id, total_cents, currency, status, "
            "version, created_at, updated_at) VALUES ($1,'ORD-V1',$2,$3,'EUR','PENDING',1,$4,$4)",
            uuid.UUID(oid),
            uuid.UUID(customer_id),
            item["line_total_cents"],
            at,
        )
        await conn.execute(
            "INSERT INTO order_items (order_id, line_no, product_id, name, quantity, "
            "unit_price_cents, line_total_cents) VALUES ($1, 1, $2, $3, $4, $5, $6)",
            uuid.UUID(oid),
            uuid.UUID(product_id),
            item["name"],
            item["quantity"],
            item["unit_price_cents"],
            item["line_total_cents"],
        )
        v1 = {
            "order_number": "ORD-V1",
            "customer_id": customer_id,
            "customer_name": customer["name"],
            "customer_email": customer["email"],
            "items": [item],
            "total_cents": item["line_total_cents"],
            "currency": "EUR",
            "status": "PENDING",
        }
        reserved = {"order_id": oid, "quantity": 2, "stock": product["stock"]}
        await append_events(
            conn,
            [
                NewEvent(
                    ev.PRODUCT, product_id, product["version"], ev.PRODUCT_STOCK_RESERVED,
                    reserved, at,
                ),
                NewEvent(ev.ORDER, oid, 1, ev.ORDER_PLACED, v1, at, schema_version=1),
            ],
        )  # fmt: skip
    stored = await app.pool.fetchrow(
        "SELECT schema_version, payload->'customer_id' IS NOT NULL AS flat FROM events "
        "WHERE aggregate_id = $1",
        uuid.UUID(oid),
    )
    assert (stored["schema_version"], stored["flat"]) == (1, True)  # really v1 in the table
    return oid, at


async def history_with_a_v1_order(app: App) -> tuple[str, shop_pb2.Order]:
    """A v1 order, then a rename of its customer and a confirmation (both current
    schema); the order document they must produce."""
    shop = Shop(app.pool)
    product = await shop.create_product(name="Book", price_cents=1999)
    customer = await shop.create_customer(name="Ada", email="ada@example.com")
    oid, placed_at = await place_v1_order(app, customer, product)
    await shop.update_customer(customer, name="Ada Lovelace")
    await shop.set_order_status(oid, "CONFIRMED")
    confirmed_at = await app.pool.fetchval(
        "SELECT occurred_at FROM events WHERE aggregate_id = $1 AND aggregate_version = 2",
        uuid.UUID(oid),
    )
    expected = shop_pb2.Order(
        id=oid,
        order_number="ORD-V1",
        customer_id=customer,
        customer_name="Ada Lovelace",
        customer_email="ada@example.com",
        items=[
            order_item(
                {
                    "product_id": product,
                    "name": "Book",
                    "quantity": 2,
                    "unit_price_cents": 1999,
                    "line_total_cents": 3998,
                }
            )
        ],
        total_cents=3998,
        currency="EUR",
        status=status_value("CONFIRMED"),
        version=2,
        created_at=timestamp(placed_at),
        updated_at=timestamp(confirmed_at),
    )
    return oid, expected


async def test_a_v1_order_placed_is_replayed_like_a_v2_one(app: App) -> None:
    oid, expected = await history_with_a_v1_order(app)
    await below_the_horizon(app)

    for name in PROJECTIONS:
        consumer = app.consumer(name)
        assert isinstance(consumer, Projection)
        rebuilt = await rebuild_one(consumer, app.pool, 2)  # small batches: several reads
        assert rebuilt.poison is None
        docs = await consumer.store.load([oid])
        assert docs[oid] == expected, name

    out = io.StringIO()
    differences = await verify_module.verify(app.select(["orders"]), app.pool, out=out)
    assert differences == 0, out.getvalue()


async def test_without_the_upcaster_the_v1_event_is_poison(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    oid, _ = await history_with_a_v1_order(app)
    # Else a rebuild started while another session holds the horizon back stops before the
    # v1 event and finds nothing wrong (the flaky "DID NOT RAISE").
    await below_the_horizon(app)
    monkeypatch.setattr(upcasting, "UPCASTERS", {})

    consumer = app.consumer("pg:orders")
    with pytest.raises(RebuildFailed) as failed:
        await rebuild_one(consumer, app.pool, 2)
    assert failed.value.event.aggregate_id == oid
    assert "no upcaster from v1 to v2" in str(failed.value)
