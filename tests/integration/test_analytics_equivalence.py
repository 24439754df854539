"""Property: the materialized analytics (SOURCE_READ_MODEL, kept incrementally by the
projector) equal the same figures computed live on the write tables (SOURCE_WRITE_MODEL)
after any command program.

Programs mix products in two currencies, customers, orders, status changes,
cancellations and deletions of orders, customers and products, and jumps of the clock
(up to ~3 months), so orders fall into many months and customers' first orders move
when they are cancelled. The database accumulates across examples on purpose.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from common.pb.shop.v1 import analytics_pb2 as an
from common.pb.shop.v1 import query_service_pb2 as qpb
from common.settings import Settings
from tests.support.programs import World, ops, run_program, running_system


class SteppingClock:
    """A clock that stands still until a program moves it (a day is 86,400 s of it)."""

    def __init__(self) -> None:
        self.now = datetime(2026, 1, 30, 22, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now

    def advance(self, days: int, hours: int) -> None:
        self.now += timedelta(days=days, hours=hours)


# Mostly orders and their fates, over enough stock; deletions of customers and products
# now and then (their orders keep counting); the shared ``ops`` for the odd invalid one.
order_ops = st.one_of(
    st.tuples(st.just("place_order"), st.integers(0, 50),
              st.lists(st.tuples(st.integers(0, 50), st.integers(1, 3)), min_size=1, max_size=3)),
    st.tuples(st.just("order_status"), st.integers(0, 50),
              st.sampled_from(["confirm", "ship", "deliver", "cancel", "cancel"])),
    st.tuples(st.just("delete_order"), st.integers(0, 50)),
)  # fmt: skip
analytics_ops = st.one_of(
    order_ops,
    order_ops,
    order_ops,
    st.tuples(st.just("create_product"), st.sampled_from("abc"), st.integers(0, 5000),
              st.just(500), st.sampled_from(["EUR", "EUR", "USD"])),
    st.tuples(st.just("create_customer"), st.integers(0, 10**6)),
    st.tuples(st.just("advance"), st.integers(0, 40), st.integers(0, 23)),
    ops,
)  # fmt: skip

RANGE = qpb.GetMonthlyRevenueRequest(from_month="2025-12", to_month="2030-12")


async def figures(stub: Any, world: World, source: int) -> dict[str, Any]:
    """Every analytics answer for the world's entities, freshness left out."""
    token = world.token
    out: dict[str, Any] = {}
    calls: list[tuple[str, Any, Any]] = [
        ("months", stub.GetMonthlyRevenue, RANGE),
        ("months/EUR", stub.GetMonthlyRevenue, _with(RANGE, currency="EUR")),
        ("months/2026-02", stub.GetMonthlyRevenue,
         qpb.GetMonthlyRevenueRequest(from_month="2026-02", to_month="2026-03")),
        ("customers", stub.ListTopCustomers, qpb.ListTopCustomersRequest(limit=100)),
        ("customers/USD", stub.ListTopCustomers,
         qpb.ListTopCustomersRequest(limit=100, currency="USD")),
        ("customers/3", stub.ListTopCustomers, qpb.ListTopCustomersRequest(limit=3)),
    ]  # fmt: skip
    for by in (an.TOP_PRODUCTS_BY_REVENUE, an.TOP_PRODUCTS_BY_UNITS):
        for currency in ("", "EUR", "USD"):
            request = qpb.ListTopProductsRequest(by=by, limit=100, currency=currency)
            calls.append((f"products/{by}/{currency}", stub.ListTopProducts, request))
        calls.append((f"products/{by}/2", stub.ListTopProducts, _with(request, limit=2)))
    calls += [
        (c, stub.GetCustomerStats, qpb.GetCustomerStatsRequest(customer_id=c))
        for c in world.customers
    ]
    calls += [
        (p, stub.GetProductSalesStats, qpb.GetProductSalesStatsRequest(product_id=p))
        for p in world.products
    ]
    for name, call, request in calls:
        request.source = source
        request.consistency_token = token
        try:
            reply = await call(request, timeout=20)
        except grpc.aio.AioRpcError as exc:
            out[name] = exc.code()
            continue
        assert reply.HasField("freshness")
        reply.ClearField("freshness")
        out[name] = reply
    return out


def _with(request: Any, **fields: Any) -> Any:
    copy = type(request)()
    copy.CopyFrom(request)
    for key, value in fields.items():
        setattr(copy, key, value)
    return copy


async def run_example(
    settings: Settings, world: World, clock: SteppingClock, program: list[tuple[Any, ...]]
) -> None:
    async with running_system(settings, clock) as (service, stub):
        for op in program:
            if op[0] == "advance":
                clock.advance(op[1], op[2])
            else:
                await run_program(service, world, [op], first_serial=len(world.products) * 7)
        materialized = await figures(stub, world, qpb.SOURCE_READ_MODEL)
        live = await figures(stub, world, qpb.SOURCE_WRITE_MODEL)
    assert materialized.keys() == live.keys()
    for key in live:
        assert materialized[key] == live[key], f"read model differs on {key}"


@hsettings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(program=st.lists(analytics_ops, min_size=5, max_size=40))
def test_materialized_analytics_equal_live_aggregates(
    settings: Settings, program: list[tuple[Any, ...]]
) -> None:
    world, clock = _WORLDS.setdefault(settings.database_url, (World(), SteppingClock()))
    asyncio.run(run_example(settings, world, clock, program))


_WORLDS: dict[str, tuple[World, SteppingClock]] = {}
