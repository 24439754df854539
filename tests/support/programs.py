"""Random command programs for property tests: hypothesis strategies for the operations,
their translation into write-side commands, and the whole system run in-process (write
service, projector with every consumer, read server over real gRPC)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import grpc
from hypothesis import strategies as st

from common.errors import AppError
from common.pb.shop.v1 import query_service_pb2_grpc as qpb_grpc
from common.settings import Settings
from projector.bootstrap import open_app as open_projector
from read_server.bootstrap import bootstrap as open_reader
from read_server.server import create_server
from tests.support.events import all_built
from write_server.adapters.postgres_uow import open_pool
from write_server.bootstrap import command_service
from write_server.domain import commands
from write_server.service_layer.service import CommandService

CATEGORIES = ("a", "b", "c")


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


def pick(ids: list[str], n: int) -> str | None:
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
    target = pick(targets.get(kind, world.orders), op[1])
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
            product = pick(world.products, n)
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
async def running_system(
    settings: Settings, clock: Callable[[], datetime] = coarse_clock
) -> AsyncIterator[tuple[CommandService, Any]]:
    """The write service (called directly) and a QueryService stub over real gRPC, with
    the projector running every consumer until the block ends."""
    pool = await open_pool(settings)
    service = command_service(pool, clock=clock)
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


async def run_program(
    service: CommandService, world: World, program: list[tuple[Any, ...]], first_serial: int = 0
) -> None:
    """Execute ``program`` (invalid commands are part of it: they change nothing) and
    record in ``world`` what it created and the last consistency token."""
    for serial, op in enumerate(program, first_serial):
        command = to_command(op, world, serial)
        if command is None:
            continue
        try:
            result = await service.execute(command)
        except AppError:
            continue
        if isinstance(command, commands.CreateProduct):
            world.products.append(result.id)
        elif isinstance(command, commands.CreateCustomer):
            world.customers.append(result.id)
        elif isinstance(command, commands.PlaceOrder):
            world.orders.append(result.id)
        world.token = result.consistency_token or world.token
