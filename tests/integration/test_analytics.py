"""The analytics figures of a known story, worked out by hand, from both sources; then
rebuilt from the event log (``cqrs projector rebuild --only analytics``) and equal again.

The story: two months, two currencies; a customer's first order is cancelled (so that
customer becomes *new* in the second month) and then deleted; a product is deleted
(it leaves the top lists, its orders keep counting in the months).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import asyncpg
import grpc
import pytest

from common.documents import timestamp
from common.pb.shop.v1 import analytics_pb2 as an
from common.pb.shop.v1 import query_service_pb2 as qpb
from common.settings import Settings
from projector.bootstrap import open_app
from projector.rebuild import rebuild_one
from tests.integration.test_analytics_equivalence import SteppingClock
from tests.support.programs import running_system
from tests.support.servers import field_violations
from write_server.domain import commands
from write_server.service_layer.service import CommandService

SOURCES = (qpb.SOURCE_READ_MODEL, qpb.SOURCE_WRITE_MODEL)


class Story:
    def __init__(self, service: CommandService, clock: SteppingClock) -> None:
        self.service = service
        self.clock = clock
        self.token = ""
        self.times: dict[str, datetime] = {}

    async def run(self, command: commands.Command, name: str = "") -> str:
        result = await self.service.execute(command)
        self.token = result.consistency_token or self.token
        if name:
            self.times[name] = self.clock.now
        return result.id

    async def product(self, price: int, currency: str) -> str:
        return await self.run(
            commands.CreateProduct(name="p", price_cents=price, currency=currency, stock=100)
        )

    async def order(self, name: str, customer: str, *items: tuple[str, int]) -> str:
        lines = tuple(commands.OrderItemRequest(p, q) for p, q in items)
        return await self.run(commands.PlaceOrder(customer_id=customer, items=lines), name)


async def ask(stub: Any, story: Story, source: int, call: str, request: Any) -> Any:
    request.source = source
    request.consistency_token = story.token
    try:
        reply = await getattr(stub, call)(request, timeout=20)
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    assert reply.HasField("freshness")
    assert reply.freshness.sequence > 0 and reply.freshness.consistency_token
    reply.ClearField("freshness")
    return reply


async def test_a_known_story_from_both_sources_and_after_a_rebuild(settings: Settings) -> None:
    clock = SteppingClock()
    clock.now = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)
    async with running_system(settings, clock) as (service, stub):
        story = Story(service, clock)
        p1, p2, p3 = (
            await story.product(1000, "EUR"),
            await story.product(250, "EUR"),
            (await story.product(500, "USD")),
        )
        a = await story.run(commands.CreateCustomer(name="A", email="a@example.org"))
        b = await story.run(commands.CreateCustomer(name="B", email="b@example.org"))
        o1 = await story.order("o1", a, (p1, 2), (p2, 1))  # January, EUR 2250
        await story.order("o2", b, (p3, 1))  # January, USD 500
        clock.advance(31, 0)
        await story.order("o3", a, (p2, 4))  # February, EUR 1000
        await story.order("o4", b, (p1, 1))  # February, EUR 1000
        await story.run(commands.ChangeOrderStatus(id=o1, action="cancel"))

        for source in SOURCES:
            stats = await ask(stub, story, source, "GetCustomerStats",
                              qpb.GetCustomerStatsRequest(customer_id=a))  # fmt: skip
            assert stats == an.CustomerStats(
                customer_id=a, total_orders=1, cancelled_orders=1,
                first_order_at=timestamp(story.times["o3"]),
                last_order_at=timestamp(story.times["o3"]),
                by_currency=[an.CustomerCurrencyStats(
                    currency="EUR", orders=1, lifetime_value_cents=1000, avg_order_value_cents=1000
                )],
            ), source  # fmt: skip

        await story.run(commands.DeleteOrder(id=o1))
        await story.run(commands.DeleteProduct(id=p3))
        expected = expected_figures(story, a, b, p1, p2, p3)
        for source in SOURCES:
            assert await figures(stub, story, source, a, b, p1, p2, p3) == expected, source
        token = story.token

    async with open_app(settings) as app:  # the projector's consumers, not running
        before = await _snapshot(app.pool)
        await rebuild_one(app.consumer("pg:analytics"), app.pool, 2)  # tiny batches
        assert await _snapshot(app.pool) == before
        assert not await app.pool.fetchval(
            "SELECT count(*) FROM pg_namespace WHERE nspname = 'analytics__rebuild'"
        )
    async with running_system(settings, clock) as (service, stub):
        story.token = token
        assert await figures(stub, story, qpb.SOURCE_READ_MODEL, a, b, p1, p2, p3) == expected

    # `cqrs projector verify` compares every figure family with the live aggregates.
    async with open_app(settings) as app:
        analytics = app.consumer("pg:analytics")
        audit = await analytics.audit({})
        assert audit is not None and audit.differences == [] and audit.documents > 0
        await app.pool.execute(
            "UPDATE analytics.months SET revenue_cents = revenue_cents + 1"
            " WHERE month = '2026-02-01'"
        )
        audit = await analytics.audit({})
        assert audit is not None and len(audit.differences) == 2, audit.differences
        assert all(line.startswith("months: ") for line in audit.differences)


def expected_figures(story: Story, a: str, b: str, p1: str, p2: str, p3: str) -> dict[str, Any]:
    t = story.times
    # Ties (P1 and P2 both earned EUR 1000; A and B both spent EUR 1000) go to the smaller id.
    p_first, p_second = sorted([p1, p2])
    c_first, c_second = sorted([a, b])
    eur = {
        p1: an.TopProduct(product_id=p1, currency="EUR", units_sold=1, revenue_cents=1000,
                          orders_count=1),
        p2: an.TopProduct(product_id=p2, currency="EUR", units_sold=4, revenue_cents=1000,
                          orders_count=1),
    }  # fmt: skip
    spent = {
        c: an.TopCustomer(customer_id=c, currency="EUR", orders=1, lifetime_value_cents=1000,
                          avg_order_value_cents=1000)
        for c in (a, b)
    }  # fmt: skip
    b_usd = an.TopCustomer(customer_id=b, currency="USD", orders=1, lifetime_value_cents=500,
                           avg_order_value_cents=500)  # fmt: skip
    return {
        "a": an.CustomerStats(
            customer_id=a, total_orders=1, cancelled_orders=0,
            first_order_at=timestamp(t["o3"]), last_order_at=timestamp(t["o3"]),
            by_currency=[an.CustomerCurrencyStats(
                currency="EUR", orders=1, lifetime_value_cents=1000, avg_order_value_cents=1000
            )],
        ),
        "b": an.CustomerStats(
            customer_id=b, total_orders=2, cancelled_orders=0,
            first_order_at=timestamp(t["o2"]), last_order_at=timestamp(t["o4"]),
            by_currency=[
                an.CustomerCurrencyStats(currency="EUR", orders=1, lifetime_value_cents=1000,
                                         avg_order_value_cents=1000),
                an.CustomerCurrencyStats(currency="USD", orders=1, lifetime_value_cents=500,
                                         avg_order_value_cents=500),
            ],
        ),
        "p2": an.ProductSalesStats(
            product_id=p2, units_sold=4, orders_count=1, last_sold_at=timestamp(t["o3"]),
            top_customer_id=a,
            by_currency=[an.ProductCurrencySales(currency="EUR", units_sold=4, orders_count=1,
                                                 revenue_cents=1000)],
        ),
        "p3": grpc.StatusCode.NOT_FOUND,
        "top_revenue": qpb.ListTopProductsResponse(products=[eur[p_first], eur[p_second]]),
        "top_units": qpb.ListTopProductsResponse(products=[eur[p2], eur[p1]]),
        "top_customers": qpb.ListTopCustomersResponse(
            customers=[spent[c_first], spent[c_second], b_usd]
        ),
        "months": qpb.GetMonthlyRevenueResponse(months=[
            # January: only B's USD order counts (A's was cancelled); B is new.
            an.MonthlyRevenue(month="2026-01", currency="USD", orders=1, revenue_cents=500,
                              avg_order_value_cents=500, new_customers=1),
            # February: A's first counting order (new), B's second month (returning).
            an.MonthlyRevenue(month="2026-02", currency="EUR", orders=2, revenue_cents=2000,
                              avg_order_value_cents=1000, new_customers=1,
                              returning_customers=1),
        ]),
    }  # fmt: skip


async def figures(
    stub: Any, story: Story, source: int, a: str, b: str, p1: str, p2: str, p3: str
) -> dict[str, Any]:
    by = an.TOP_PRODUCTS_BY_UNITS
    asks: dict[str, tuple[str, Any]] = {
        "a": ("GetCustomerStats", qpb.GetCustomerStatsRequest(customer_id=a)),
        "b": ("GetCustomerStats", qpb.GetCustomerStatsRequest(customer_id=b)),
        "p2": ("GetProductSalesStats", qpb.GetProductSalesStatsRequest(product_id=p2)),
        "p3": ("GetProductSalesStats", qpb.GetProductSalesStatsRequest(product_id=p3)),
        "top_revenue": ("ListTopProducts", qpb.ListTopProductsRequest()),
        "top_units": ("ListTopProducts", qpb.ListTopProductsRequest(by=by)),
        "top_customers": ("ListTopCustomers", qpb.ListTopCustomersRequest()),
        "months": ("GetMonthlyRevenue",
                   qpb.GetMonthlyRevenueRequest(from_month="2025-12", to_month="2026-03")),
    }  # fmt: skip
    return {name: await ask(stub, story, source, *call) for name, call in asks.items()}


async def _snapshot(pool: asyncpg.Pool) -> dict[str, list[Any]]:
    """Every analytics row, but for rows of sums that are all zero: a live batch may add and
    later subtract an order's share (leaving zeros), a rebuild's batch may net it out."""
    nonzero = {
        "customers": "true",
        "products": "true",
        "orders": "true",
        "order_lines": "true",
        "customer_currencies": "orders <> 0 OR value_cents <> 0",
        "product_currencies": "units_sold <> 0 OR orders_count <> 0 OR revenue_cents <> 0",
        "product_customers": "units <> 0",
        "customer_months": "orders <> 0",
        "months": "orders <> 0 OR revenue_cents <> 0 OR new_customers <> 0"
        " OR returning_customers <> 0",
    }
    return {
        t: [
            tuple(r)
            for r in await pool.fetch(f"SELECT * FROM analytics.{t} WHERE {w} ORDER BY 1, 2")
        ]
        for t, w in nonzero.items()
    }


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (qpb.GetMonthlyRevenueRequest(from_month="2026-13", to_month="2026-01"), "from_month"),
        (qpb.GetMonthlyRevenueRequest(from_month="2026-03", to_month="2026-01"), "to_month"),
        (qpb.GetMonthlyRevenueRequest(from_month="2000-01", to_month="2026-01"), "to_month"),
        (qpb.ListTopProductsRequest(limit=101), "limit"),
        (qpb.ListTopCustomersRequest(currency="eur"), "currency"),
        (qpb.GetCustomerStatsRequest(customer_id="x"), "customer_id"),
        (qpb.GetProductSalesStatsRequest(source=qpb.SOURCE_PROJECTION), "source"),
    ],
)
async def test_bad_requests_are_invalid_argument(
    settings: Settings, request_: Any, field: str
) -> None:
    call = {
        qpb.GetMonthlyRevenueRequest: "GetMonthlyRevenue",
        qpb.ListTopProductsRequest: "ListTopProducts",
        qpb.ListTopCustomersRequest: "ListTopCustomers",
        qpb.GetCustomerStatsRequest: "GetCustomerStats",
        qpb.GetProductSalesStatsRequest: "GetProductSalesStats",
    }[type(request_)]
    async with running_system(settings) as (_, stub):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await getattr(stub, call)(request_, timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in field_violations(caught.value)
