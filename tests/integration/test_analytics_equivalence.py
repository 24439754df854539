"""Property: the materialized analytics (SOURCE_READ_MODEL, kept incrementally by the
projector) equal the same figures computed live on the write tables (SOURCE_WRITE_MODEL)
after any command program.

Programs mix products in two currencies, customers, orders, status changes,
cancellations and deletions of orders, customers and products, payments (the write service
runs with payments on: confirming requests one, and the program reports captures, failures
and refunds as the payments process manager would), and jumps of the clock (up to ~3
months), so orders fall into many months and customers' first orders move when they are
cancelled. The database accumulates across examples on purpose.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import grpc
from hypothesis import HealthCheck, example, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from common.errors import AppError
from common.pb.shop.v1 import analytics_pb2 as an
from common.pb.shop.v1 import query_service_pb2 as qpb
from common.settings import Settings
from tests.support.programs import World, ops, run_program, running_system
from write_server.adapters.postgres_uow import open_pool
from write_server.bootstrap import command_service
from write_server.domain import commands


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
# A step of an order's payment, on an order it applies to (see ``_PAYABLE``).
payment_ops = st.tuples(
    st.just("payment"), st.integers(0, 50),
    st.sampled_from(["confirm", "pay", "pay", "decline", "captured", "cancel", "refund"]),
)  # fmt: skip
analytics_ops = st.one_of(
    order_ops,
    payment_ops,
    payment_ops,
    order_ops,
    order_ops,
    st.tuples(st.just("create_product"), st.sampled_from("abc"), st.integers(0, 5000),
              st.just(500), st.sampled_from(["EUR", "EUR", "USD"])),
    st.tuples(st.just("create_customer"), st.integers(0, 10**6)),
    st.tuples(st.just("advance"), st.integers(0, 40), st.integers(0, 23)),
    ops,
)  # fmt: skip

# Always tried first (random programs place few orders, and fewer reach a payment): every
# payment step, a refund, a capture of an order cancelled while being charged, deletions.
PAYMENT_PROGRAM: list[tuple[Any, ...]] = [
    ("create_product", "a", 1000, 500, "EUR"), ("create_product", "a", 700, 500, "USD"),
    ("create_customer", 1), ("create_customer", 2),
    *[("place_order", i, [(i, 1)]) for i in range(6)],
    ("payment", 0, "pay"), ("payment", 0, "pay"), ("payment", 0, "pay"),
    ("payment", 0, "decline"), ("payment", 0, "confirm"), ("order_status", 5, "cancel"),
    ("payment", 0, "captured"), ("payment", 0, "refund"), ("payment", 0, "cancel"),
    ("delete_order", 1), ("delete_order", 2),
]  # fmt: skip

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


# A payment step: the orders it applies to (order status or NULL for any, payment_status)
# and what happens to one of them. Confirming requests the payment; cancelling a captured
# order requests its refund; the outcomes are what the payments process manager reports.
_PAYABLE: dict[str, tuple[str | None, str, tuple[str, ...]]] = {
    "confirm": ("PENDING", "UNPAID", ("confirm",)),
    "pay": ("PENDING", "UNPAID", ("confirm", "captured")),
    "decline": ("PENDING", "UNPAID", ("confirm", "failed")),
    "captured": (None, "PENDING", ("captured",)),  # maybe cancelled while being charged
    "cancel": ("CONFIRMED", "CAPTURED", ("cancel",)),
    "refund": (None, "CAPTURED", ("cancel", "refunded")),
}


async def payment_step(
    service: Any, pool: asyncpg.Pool, world: World, op: tuple[Any, ...], serial: int
) -> None:
    """``op``'s step for one of the orders it applies to (none: nothing happens)."""
    _, n, step = op
    status, payment, actions = _PAYABLE[step]
    rows = await pool.fetch(
        "SELECT id::text AS id, total_cents, currency FROM orders WHERE payment_status = $2"
        " AND ($1::text IS NULL OR status = $1) AND deleted_at IS NULL ORDER BY created_at, id",
        status,
        payment,
    )
    if not rows:
        return
    row = rows[n % len(rows)]
    for action in actions:
        command: commands.Command
        if action in ("confirm", "cancel"):
            command = commands.ChangeOrderStatus(id=row["id"], action=action)
        else:
            command = commands.RecordPaymentResult(
                order_id=row["id"], outcome=action, provider_charge_id=f"ch_{serial}",
                provider_refund_id=f"re_{serial}", amount_cents=row["total_cents"],
                currency=row["currency"], reason="declined",
            )  # fmt: skip
        try:
            result = await service.execute(command)
        except AppError:
            continue  # e.g. a shipped order cannot be cancelled (nor refunded)
        world.token = result.consistency_token or world.token


async def run_example(
    settings: Settings, world: World, clock: SteppingClock, program: list[tuple[Any, ...]]
) -> None:
    pool = await open_pool(settings)
    service = command_service(pool, clock=clock, payments=True)
    try:
        async with running_system(settings, clock) as (_, stub):
            for serial, op in enumerate(program):
                if op[0] == "advance":
                    clock.advance(op[1], op[2])
                elif op[0] == "payment":
                    await payment_step(service, pool, world, op, serial)
                else:
                    await run_program(service, world, [op], first_serial=len(world.products) * 7)
            materialized = await figures(stub, world, qpb.SOURCE_READ_MODEL)
            live = await figures(stub, world, qpb.SOURCE_WRITE_MODEL)
    finally:
        await pool.close()
    assert materialized.keys() == live.keys()
    for key in live:
        assert materialized[key] == live[key], f"read model differs on {key}"


@hsettings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(program=st.lists(analytics_ops, min_size=5, max_size=40))
@example(program=PAYMENT_PROGRAM)
def test_materialized_analytics_equal_live_aggregates(
    settings: Settings, program: list[tuple[Any, ...]]
) -> None:
    world, clock = _WORLDS.setdefault(settings.database_url, (World(), SteppingClock()))
    asyncio.run(run_example(settings, world, clock, program))


_WORLDS: dict[str, tuple[World, SteppingClock]] = {}
