"""Property: after the projector catches up, all three sources answer identically.

Hypothesis draws random command programs (valid and invalid); each runs against
the real write side, projector and read server (in-process, real PostgreSQL,
Redis and gRPC). Then every get and every list, page by page and with every
filter, must be equal across SOURCE_PROJECTION, SOURCE_READ_MODEL and
SOURCE_WRITE_MODEL. A coarse clock makes created_at ties common, so the id
tie-break is exercised. The database accumulates across examples on purpose.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import grpc
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from common.errors import AppError
from common.pb.shop.v1 import query_service_pb2 as qpb
from common.pb.shop.v1 import query_service_pb2_grpc as qpb_grpc
from common.pb.shop.v1 import shop_pb2
from common.settings import Settings
from projector.bootstrap import open_app as open_projector
from read_server.bootstrap import bootstrap as open_reader
from read_server.server import create_server
from tests.support.events import all_built
from tests.support.paging import PageGuard
from write_server.adapters.postgres_uow import open_pool
from write_server.bootstrap import command_service
from write_server.domain import commands
from write_server.service_layer.service import CommandService

SOURCES = (qpb.SOURCE_PROJECTION, qpb.SOURCE_READ_MODEL, qpb.SOURCE_WRITE_MODEL)
CATEGORIES = ("a", "b", "c")
STATUSES = [v for v in shop_pb2.OrderStatus.values() if v]


def coarse_clock() -> datetime:
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 20_000 * 20_000)


ops = st.one_of(
    st.tuples(st.just("create_product"), st.sampled_from(CATEGORIES), st.integers(0, 5000),
              st.integers(0, 6), st.sampled_from(["EUR", "EUR", "USD"])),
    st.tuples(st.just("update_product"), st.integers(0, 50), st.sampled_from(CATEGORIES),
              st.integers(-1, 6)),
    st.tuples(st.just("delete_product"), st.integers(0, 50)),
    st.tuples(st.just("create_customer"), st.integers(0, 6)),
    st.tuples(st.just("update_customer"), st.integers(0, 50), st.integers(0, 6)),
    st.tuples(st.just("delete_customer"), st.integers(0, 50)),
    st.tuples(st.just("place_order"), st.integers(0, 50),
              st.lists(st.tuples(st.integers(0, 50), st.integers(1, 3)), min_size=1, max_size=3)),
    st.tuples(st.just("order_status"), st.integers(0, 50),
              st.sampled_from(["confirm", "ship", "deliver", "cancel"])),
    st.tuples(st.just("delete_order"), st.integers(0, 50)),
)  # fmt: skip


@dataclass
class World:
    products: list[str] = field(default_factory=list)
    customers: list[str] = field(default_factory=list)
    orders: list[str] = field(default_factory=list)
    token: str = ""


def _pick(ids: list[str], n: int) -> str | None:
    return ids[n % len(ids)] if ids else None


def to_command(op: tuple[Any, ...], world: World, serial: int) -> commands.Command | None:
    kind = op[0]
    if kind == "create_product":
        _, category, price, stock, currency = op
        return commands.CreateProduct(
            name=f"p{serial}", price_cents=price, currency=currency, category=category, stock=stock
        )
    if kind == "create_customer":
        return commands.CreateCustomer(name=f"c{serial}", email=f"user{op[1]}@example.org")
    targets = {
        "update_product": world.products,
        "delete_product": world.products,
        "update_customer": world.customers,
        "delete_customer": world.customers,
        "place_order": world.customers,
    }
    target = _pick(targets.get(kind, world.orders), op[1])
    if target is None:
        return None
    if kind == "update_product":
        changes: dict[str, Any] = {"category": op[2], "name": f"p{serial}"}
        if op[3] >= 0:
            changes["stock"] = op[3]
        return commands.UpdateProduct(id=target, changes=changes)
    if kind == "delete_product":
        return commands.DeleteProduct(id=target)
    if kind == "update_customer":
        return commands.UpdateCustomer(
            id=target, changes={"name": f"c{serial}", "email": f"user{op[2]}.{serial}@example.org"}
        )
    if kind == "delete_customer":
        return commands.DeleteCustomer(id=target)
    if kind == "place_order":
        items: dict[str, int] = {}
        for n, qty in op[2]:
            product = _pick(world.products, n)
            if product is not None:
                items[product] = qty
        return commands.PlaceOrder(
            customer_id=target,
            items=tuple(commands.OrderItemRequest(p, q) for p, q in items.items()),
        )
    if kind == "order_status":
        return commands.ChangeOrderStatus(id=target, action=op[2])
    return commands.DeleteOrder(id=target)


@asynccontextmanager
async def running_system(settings: Settings) -> AsyncIterator[tuple[CommandService, Any]]:
    pool = await open_pool(settings)
    service = command_service(pool, clock=coarse_clock)
    stop = asyncio.Event()
    async with open_projector(settings) as projector_app:
        projector = asyncio.create_task(projector_app.projector().run(stop))
        await all_built(projector_app.consumers)
        reader = await open_reader(settings)
        built = create_server(reader, "127.0.0.1:0")
        await built.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{built.port}") as channel:
                yield service, qpb_grpc.QueryServiceStub(channel)
        finally:
            await built.server.stop(None)
            await reader.close()
            stop.set()
            await projector
            await pool.close()


async def list_all(call: Any, request: Any, field_name: str) -> list[Any]:
    items: list[Any] = []
    guard = PageGuard()
    while True:
        reply = await call(request, timeout=20)
        items.extend(getattr(reply, field_name))
        if not reply.next_page_token:
            return items
        request.page_token = guard.next(reply.next_page_token)


async def answers(stub: Any, world: World, source: int) -> dict[str, Any]:
    token = world.token
    out: dict[str, Any] = {}
    lists: list[tuple[str, Any, Any, str]] = [
        ("products", stub.ListProducts, qpb.ListProductsRequest(page_size=3), "products"),
        ("customers", stub.ListCustomers, qpb.ListCustomersRequest(page_size=3), "customers"),
        ("orders", stub.ListOrders, qpb.ListOrdersRequest(page_size=3), "orders"),
    ]
    lists += [
        (f"products/{cat}", stub.ListProducts, qpb.ListProductsRequest(category=cat), "products")
        for cat in CATEGORIES
    ]
    lists += [
        (f"orders/{cid}/{status}", stub.ListOrders,
         qpb.ListOrdersRequest(customer_id=cid, status=status, page_size=2), "orders")
        for cid in ["", *world.customers] for status in [0, *STATUSES]
    ]  # fmt: skip
    for name, call, request, field_name in lists:
        request.source = source
        request.consistency_token = token
        out[name] = await list_all(call, request, field_name)
    gets = [
        *((i, stub.GetProduct, qpb.GetProductRequest) for i in world.products),
        *((i, stub.GetCustomer, qpb.GetCustomerRequest) for i in world.customers),
        *((i, stub.GetOrder, qpb.GetOrderRequest) for i in world.orders),
    ]
    for ident, call, kind in gets:
        try:
            out[ident] = await call(
                kind(id=ident, source=source, consistency_token=token), timeout=20
            )
        except grpc.aio.AioRpcError as exc:
            out[ident] = exc.code()
    return out


async def run_example(settings: Settings, world: World, program: list[tuple[Any, ...]]) -> None:
    async with running_system(settings) as (service, stub):
        for serial, op in enumerate(program):
            command = to_command(op, world, serial)
            if command is None:
                continue
            try:
                result = await service.execute(command)
            except AppError:
                continue  # invalid commands are part of the program; they change nothing
            if isinstance(command, commands.CreateProduct):
                world.products.append(result.id)
            elif isinstance(command, commands.CreateCustomer):
                world.customers.append(result.id)
            elif isinstance(command, commands.PlaceOrder):
                world.orders.append(result.id)
            world.token = result.consistency_token or world.token
        results = [await answers(stub, world, s) for s in SOURCES]
    projection, read_model, write_model = results
    assert write_model.keys() == projection.keys() == read_model.keys()
    for key in write_model:
        assert projection[key] == write_model[key], f"projection differs on {key}"
        assert read_model[key] == write_model[key], f"read model differs on {key}"


@hsettings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(program=st.lists(ops, min_size=1, max_size=25))
def test_three_sources_agree_after_any_program(
    settings: Settings, program: list[tuple[Any, ...]]
) -> None:
    world = _WORLDS.setdefault(settings.database_url, World())
    asyncio.run(run_example(settings, world, program))


_WORLDS: dict[str, World] = {}
