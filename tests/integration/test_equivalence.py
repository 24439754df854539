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
import dataclasses
from typing import Any

import asyncpg
import grpc
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from common.pb.shop.v1 import query_service_pb2 as qpb
from common.pb.shop.v1 import shop_pb2
from common.redis_client import redis_client
from common.settings import Settings
from tests.support.paging import PageGuard
from tests.support.programs import CATEGORIES, World, ops, run_program, running_system

SOURCES = (qpb.SOURCE_PROJECTION, qpb.SOURCE_READ_MODEL, qpb.SOURCE_WRITE_MODEL)
STATUSES = [v for v in shop_pb2.OrderStatus.values() if v]


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
        await run_program(service, world, program)
        results = [await answers(stub, world, s) for s in SOURCES]
    projection, read_model, write_model = results
    assert write_model.keys() == projection.keys() == read_model.keys()
    for key in write_model:
        assert projection[key] == write_model[key], f"projection differs on {key}"
        assert read_model[key] == write_model[key], f"read model differs on {key}"


def examples(n: int) -> Any:
    """``n`` random programs, against one database that accumulates across them."""
    return hsettings(
        max_examples=n,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )


PROGRAMS = st.lists(ops, min_size=1, max_size=25)


@examples(20)
@given(program=PROGRAMS)
def test_three_sources_agree_after_any_program(
    settings: Settings, program: list[tuple[Any, ...]]
) -> None:
    world = _WORLDS.setdefault(settings.database_url, World())
    asyncio.run(run_example(settings, world, program))


@examples(8)
@given(program=PROGRAMS)
def test_three_sources_agree_with_every_projection_in_four_segments(
    settings: Settings, program: list[tuple[Any, ...]]
) -> None:
    """The same with each projection split into four segments (projector.segments): an
    order's events in its own segment, a customer's update rewriting, in each segment,
    the orders that segment owns."""
    split = dataclasses.replace(settings, projector_segments="*=4")
    world = _WORLDS.setdefault(settings.database_url, World())
    asyncio.run(run_example(split, world, program))
    assert asyncio.run(_segment_rows(settings)) == {
        f"pg:{family}#{i}/4" for family in ("products", "customers", "orders") for i in range(4)
    }


@examples(8)
@given(program=PROGRAMS)
def test_three_sources_agree_with_every_redis_projection_spread_over_three_keyspaces(
    settings: Settings, program: list[tuple[Any, ...]]
) -> None:
    """The same with each projection in three segments and each Redis one spread over three
    keyspaces (CQRS_REDIS_SPREAD): a get reads one shard, a list merges three, page by page."""
    spread = dataclasses.replace(settings, projector_segments="*=3", redis_spread=True)
    world = _WORLDS.setdefault(settings.database_url, World())
    asyncio.run(run_example(spread, world, program))
    assert asyncio.run(_shard_keys(settings)) == {
        f"{family}#{i}/3" for family in ("products", "customers", "orders") for i in range(3)
    }


async def _shard_keys(settings: Settings) -> set[str]:
    """The shards (hash tags without their suffix) that have an active generation."""
    client = redis_client(settings.redis_url, max_connections=1)
    try:
        found = [k async for k in client.scan_iter(match=f"{settings.redis_prefix}:*:active")]
        tags = {k.decode().partition("{")[2].partition("}")[0] for k in found}
        return {t.rpartition(".")[0] if "." in t else t for t in tags if "#" in t}
    finally:
        await client.aclose()


async def _segment_rows(settings: Settings) -> set[str]:
    conn = await asyncpg.connect(settings.asyncpg_dsn)
    try:
        rows = await conn.fetch(
            "SELECT projection FROM read.projection_checkpoints WHERE projection LIKE '%#%'"
        )
        return {r["projection"] for r in rows}
    finally:
        await conn.close()


_WORLDS: dict[str, World] = {}
