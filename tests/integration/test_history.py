"""History and time travel over gRPC on real PostgreSQL: the write side's command
service (with a clock the test sets) makes the events, an in-process read server
answers GetAggregateHistory and Get*AsOf."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from common import events as ev
from common.documents import timestamp
from common.pb.shop.v1 import history_pb2 as hpb
from common.pb.shop.v1 import query_service_pb2 as qs
from common.pb.shop.v1 import query_service_pb2_grpc, shop_pb2
from common.settings import Settings
from read_server.bootstrap import bootstrap
from read_server.history.paging import encode_history_token
from tests.integration.test_read_grpc import serving
from tests.support.events import NewEvent, append_events
from tests.support.servers import field_violations
from write_server.bootstrap import bootstrap as bootstrap_write
from write_server.bootstrap import command_service
from write_server.domain import commands as c
from write_server.service_layer.service import CommandService, RequestMeta

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def ts(minutes: float) -> Timestamp:
    return timestamp(at(minutes))


@dataclass
class Env:
    service: CommandService
    stub: Any  # QueryServiceStub
    pool: Any  # asyncpg.Pool of the write server
    now: list[datetime]

    async def run(self, minutes: float, command: c.Command, meta: RequestMeta | None = None) -> str:
        """Execute ``command`` as if at T0 + ``minutes``; the aggregate's id."""
        self.now[0] = at(minutes)
        return (await self.service.execute(command, meta)).id


@pytest.fixture
async def env(settings: Settings) -> AsyncIterator[Env]:
    app = await bootstrap(settings)
    writer = await bootstrap_write(settings)
    now = [T0]
    try:
        async with serving(app) as channel:
            yield Env(
                command_service(writer.pool, clock=lambda: now[0]),
                query_service_pb2_grpc.QueryServiceStub(channel),
                writer.pool,
                now,
            )
    finally:
        await writer.close()
        await app.close()


async def rpc_error(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


def history(kind: int, ident: str, size: int = 0, token: str = "") -> qs.GetAggregateHistoryRequest:
    return qs.GetAggregateHistoryRequest(
        aggregate_type=kind,  # type: ignore[arg-type]
        aggregate_id=ident,
        page_size=size,
        page_token=token,
    )


async def test_history_pages_through_every_event_in_version_order(env: Env) -> None:
    meta = RequestMeta(peer="ipv4:10.0.0.1:5000", user_agent="tester/1", auth_subject="alice")
    pid = await env.run(
        0,
        c.CreateProduct(name="Cup", price_cents=100, currency="EUR", stock=5, request_id="r-0"),
        meta,
    )
    for n in range(1, 121):
        await env.run(n, c.UpdateProduct(id=pid, changes={"price_cents": 100 + n}))

    events: list[hpb.HistoryEvent] = []
    token, pages = "", 0
    while True:
        page = await env.stub.GetAggregateHistory(
            history(hpb.AGGREGATE_TYPE_PRODUCT, pid, 50, token)
        )
        events += page.events
        pages += 1
        token = page.next_page_token
        if not token:
            break
    assert pages == 3 and len(events) == 121
    assert [e.version for e in events] == list(range(1, 122))
    assert [e.sequence for e in events] == sorted(e.sequence for e in events)
    first, last = events[0], events[-1]
    assert first.event_type == ev.PRODUCT_CREATED and first.WhichOneof("typed_payload") == (
        "product_created"
    )
    assert first.product_created.stock == 5
    assert first.metadata == hpb.EventMetadata(
        request_id="r-0", peer="ipv4:10.0.0.1:5000", user_agent="tester/1", subject="alice"
    )
    assert last.event_type == ev.PRODUCT_UPDATED
    assert list(last.product_updated.update_mask.paths) == ["price_cents"]
    assert last.product_updated.changes.price_cents == 220
    assert json.loads(last.payload_json) == {"changes": {"price_cents": 220}}
    assert last.occurred_at == ts(120) and last.schema_version == 1

    # Default page size 50; one past the last page is empty, not an error.
    default = await env.stub.GetAggregateHistory(history(hpb.AGGREGATE_TYPE_PRODUCT, pid))
    assert len(default.events) == 50
    beyond = encode_history_token(pid, 121)
    empty = await env.stub.GetAggregateHistory(history(hpb.AGGREGATE_TYPE_PRODUCT, pid, 5, beyond))
    assert list(empty.events) == [] and empty.next_page_token == ""


async def test_history_errors(env: Env) -> None:
    pid = await env.run(0, c.CreateProduct(name="Cup", price_cents=1, currency="EUR", stock=1))
    other = await env.run(0, c.CreateProduct(name="Pot", price_cents=1, currency="EUR", stock=1))
    first = await env.stub.GetAggregateHistory(history(hpb.AGGREGATE_TYPE_PRODUCT, pid, 1))
    assert first.next_page_token == ""  # one event only

    as_order = await rpc_error(env.stub.GetAggregateHistory(history(hpb.AGGREGATE_TYPE_ORDER, pid)))
    assert as_order.code() == grpc.StatusCode.NOT_FOUND
    unknown = await rpc_error(
        env.stub.GetAggregateHistory(history(hpb.AGGREGATE_TYPE_PRODUCT, str(uuid.uuid4())))
    )
    assert unknown.code() == grpc.StatusCode.NOT_FOUND

    await env.run(1, c.UpdateProduct(id=other, changes={"name": "Pan"}))
    token = (
        await env.stub.GetAggregateHistory(history(hpb.AGGREGATE_TYPE_PRODUCT, other, 1))
    ).next_page_token
    assert token
    for request in (
        history(hpb.AGGREGATE_TYPE_PRODUCT, pid, 1, token),  # another aggregate's token
        history(hpb.AGGREGATE_TYPE_PRODUCT, pid, 1, "garbage"),
    ):
        error = await rpc_error(env.stub.GetAggregateHistory(request))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert set(field_violations(error)) == {"page_token"}
    error = await rpc_error(
        env.stub.GetAggregateHistory(history(hpb.AGGREGATE_TYPE_UNSPECIFIED, pid, 1001))
    )
    assert set(field_violations(error)) == {"aggregate_type", "page_size"}


async def test_product_as_of_before_creation_between_updates_and_after_deletion(env: Env) -> None:
    pid = await env.run(10, c.CreateProduct(name="Cup", price_cents=100, currency="EUR", stock=5))
    await env.run(20, c.UpdateProduct(id=pid, changes={"price_cents": 150, "name": "Mug"}))
    await env.run(30, c.UpdateProduct(id=pid, changes={"category": "kitchen"}))
    await env.run(40, c.DeleteProduct(id=pid))

    def get(minutes: float) -> Any:
        return env.stub.GetProductAsOf(qs.GetProductAsOfRequest(id=pid, as_of=ts(minutes)))

    before = await rpc_error(get(9.99))
    assert before.code() == grpc.StatusCode.NOT_FOUND
    assert "did not exist yet at 2026-03-01T12:09:59.400000Z" in (before.details() or "")
    created = await get(10)  # at the very instant: included
    assert (created.name, created.price_cents, created.version) == ("Cup", 100, 1)
    assert created.created_at == ts(10) and created.updated_at == ts(10)
    between = await get(25)
    assert (between.name, between.price_cents, between.category, between.version) == (
        "Mug",
        150,
        "",
        2,
    )
    assert between.updated_at == ts(20) and between.created_at == ts(10)
    last = await get(39)
    assert (last.category, last.version) == ("kitchen", 3)
    gone = await rpc_error(get(40))
    assert gone.code() == grpc.StatusCode.NOT_FOUND
    assert f"product {pid} was deleted at 2026-03-01T12:40:00Z" in (gone.details() or "")
    never = await rpc_error(
        env.stub.GetProductAsOf(qs.GetProductAsOfRequest(id=str(uuid.uuid4()), as_of=ts(50)))
    )
    assert never.code() == grpc.StatusCode.NOT_FOUND and "not found" in (never.details() or "")
    missing = await rpc_error(env.stub.GetProductAsOf(qs.GetProductAsOfRequest(id=pid)))
    assert field_violations(missing) == {"as_of": "is required"}
    # A product id asked for as a customer: not found (ids are not shared across types).
    wrong = await rpc_error(
        env.stub.GetCustomerAsOf(qs.GetCustomerAsOfRequest(id=pid, as_of=ts(25)))
    )
    assert wrong.code() == grpc.StatusCode.NOT_FOUND


async def test_order_as_of_shows_its_status_and_customer_contact_then(env: Env) -> None:
    pid = await env.run(0, c.CreateProduct(name="Cup", price_cents=250, currency="EUR", stock=9))
    cid = await env.run(0, c.CreateCustomer(name="Ann", email="ann@example.org"))
    await env.run(5, c.UpdateCustomer(id=cid, changes={"name": "Ann Smith"}))  # before the order
    oid = await env.run(10, c.PlaceOrder(customer_id=cid, items=(c.OrderItemRequest(pid, 2),)))
    await env.run(20, c.ChangeOrderStatus(id=oid, action="confirm"))
    await env.run(25, c.UpdateCustomer(id=cid, changes={"email": "ann@smith.example"}))
    await env.run(30, c.ChangeOrderStatus(id=oid, action="ship"))
    await env.run(40, c.UpdateCustomer(id=cid, changes={"name": "Ann Jones"}))

    def get(minutes: float) -> Any:
        return env.stub.GetOrderAsOf(qs.GetOrderAsOfRequest(id=oid, as_of=ts(minutes)))

    placed = await get(15)
    assert placed.status == shop_pb2.ORDER_STATUS_PENDING and placed.version == 1
    assert (placed.customer_name, placed.customer_email) == ("Ann Smith", "ann@example.org")
    assert [(i.name, i.quantity, i.line_total_cents) for i in placed.items] == [("Cup", 2, 500)]
    confirmed = await get(26)
    assert confirmed.status == shop_pb2.ORDER_STATUS_CONFIRMED and confirmed.version == 2
    assert (confirmed.customer_name, confirmed.customer_email) == ("Ann Smith", "ann@smith.example")
    assert confirmed.updated_at == ts(20)  # a customer change does not touch the order
    shipped = await get(35)
    assert (shipped.status, shipped.customer_name) == (shop_pb2.ORDER_STATUS_SHIPPED, "Ann Smith")
    now = await get(60)
    assert now.customer_name == "Ann Jones"
    live = await env.stub.GetOrder(qs.GetOrderRequest(id=oid, source=qs.SOURCE_WRITE_MODEL))
    assert now == live  # as of now is what the live views show
    before = await rpc_error(get(9))
    assert before.code() == grpc.StatusCode.NOT_FOUND

    # The customer itself, as of before and after its rename and deletion.
    customer = await env.stub.GetCustomerAsOf(qs.GetCustomerAsOfRequest(id=cid, as_of=ts(30)))
    assert (customer.name, customer.email, customer.version) == (
        "Ann Smith",
        "ann@smith.example",
        3,
    )


async def test_a_deleted_customer_keeps_its_name_on_orders_as_of_later(env: Env) -> None:
    pid = await env.run(0, c.CreateProduct(name="Cup", price_cents=250, currency="EUR", stock=9))
    cid = await env.run(0, c.CreateCustomer(name="Bo", email="bo@example.org"))
    oid = await env.run(1, c.PlaceOrder(customer_id=cid, items=(c.OrderItemRequest(pid, 1),)))
    await env.run(2, c.ChangeOrderStatus(id=oid, action="cancel"))
    await env.run(3, c.UpdateCustomer(id=cid, changes={"name": "Bo B."}))
    await env.run(4, c.DeleteCustomer(id=cid))
    await env.run(5, c.DeleteOrder(id=oid))

    gone = await rpc_error(env.stub.GetCustomerAsOf(qs.GetCustomerAsOfRequest(id=cid, as_of=ts(4))))
    assert gone.code() == grpc.StatusCode.NOT_FOUND and "was deleted at" in (gone.details() or "")
    order = await env.stub.GetOrderAsOf(qs.GetOrderAsOfRequest(id=oid, as_of=ts(4.5)))
    assert (order.status, order.customer_name) == (shop_pb2.ORDER_STATUS_CANCELLED, "Bo B.")
    deleted = await rpc_error(env.stub.GetOrderAsOf(qs.GetOrderAsOfRequest(id=oid, as_of=ts(9))))
    assert "was deleted at 2026-03-01T12:05:00Z" in (deleted.details() or "")

    full = await env.stub.GetAggregateHistory(history(hpb.AGGREGATE_TYPE_ORDER, oid))
    assert [e.event_type for e in full.events] == [
        ev.ORDER_PLACED,
        ev.ORDER_CANCELLED,
        ev.ORDER_DELETED,
    ]
    assert full.events[1].order_status_changed.status == shop_pb2.ORDER_STATUS_CANCELLED
    assert full.events[2].WhichOneof("typed_payload") is None
    assert json.loads(full.events[2].payload_json) == {}
    stock = await env.stub.GetAggregateHistory(history(hpb.AGGREGATE_TYPE_PRODUCT, pid))
    assert [e.WhichOneof("typed_payload") for e in stock.events] == [
        "product_created",
        "product_stock_changed",
        "product_stock_changed",
    ]
    assert [e.product_stock_changed.stock for e in stock.events[1:]] == [8, 9]


async def test_a_stored_v1_order_placed_is_shown_and_replayed_in_the_current_schema(
    env: Env,
) -> None:
    cid = await env.run(0, c.CreateCustomer(name="Ada", email="ada@example.com"))
    oid = str(uuid.uuid4())
    v1 = {
        "order_number": "ORD-V1",
        "customer_id": cid,
        "customer_name": "Ada",
        "customer_email": "ada@example.com",
        "items": [
            {
                "product_id": str(uuid.uuid4()),
                "name": "Book",
                "quantity": 1,
                "unit_price_cents": 900,
                "line_total_cents": 900,
            }
        ],
        "total_cents": 900,
        "currency": "EUR",
        "status": "PENDING",
    }
    async with env.pool.acquire() as conn, conn.transaction():
        await append_events(
            conn, [NewEvent(ev.ORDER, oid, 1, ev.ORDER_PLACED, v1, at(1), schema_version=1)]
        )
    await env.run(2, c.UpdateCustomer(id=cid, changes={"name": "Ada L."}))

    page = await env.stub.GetAggregateHistory(history(hpb.AGGREGATE_TYPE_ORDER, oid))
    (placed,) = page.events
    assert placed.schema_version == 1
    payload = json.loads(placed.payload_json)
    assert payload["customer"] == {"id": cid, "name": "Ada", "email": "ada@example.com"}
    assert "customer_id" not in payload
    assert (placed.order_placed.customer_id, placed.order_placed.order_number) == (cid, "ORD-V1")

    order = await env.stub.GetOrderAsOf(qs.GetOrderAsOfRequest(id=oid, as_of=ts(3)))
    assert (order.customer_id, order.customer_name, order.total_cents) == (cid, "Ada L.", 900)
