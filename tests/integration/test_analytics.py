"""The analytics figures of a known story, worked out by hand, from both sources; then
rebuilt from the event log (``cqrs projector rebuild --only analytics``) and equal again.

The story: two months, two currencies; a customer's first order is cancelled (so that
customer becomes *new* in the second month) and then deleted; a product is deleted
(it leaves the top lists, its orders keep counting in the months). A second story, of raw
payment events: captures in two currencies, a failure, a refund, deletions before and after
the refund, and a cancelled order whose payment still counts.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import asyncpg
import grpc
import pytest

from common import events as ev
from common.documents import timestamp
from common.pb.shop.v1 import analytics_pb2 as an
from common.pb.shop.v1 import query_service_pb2 as qpb
from common.positions import Position, encode_token
from common.settings import Settings
from projector.bootstrap import open_app
from projector.rebuild import rebuild_one
from projector.verify import WriteModelReference
from tests.integration.test_analytics_equivalence import SteppingClock
from tests.support.events import Shop
from tests.support.programs import running_system
from tests.support.servers import field_violations
from write_server.adapters.postgres_uow import open_pool
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
        audit = await analytics.audit(WriteModelReference(app.pool))
        assert audit is not None and audit.differences == [] and audit.documents > 0
        await app.pool.execute(
            "UPDATE analytics.months SET revenue_cents = revenue_cents + 1"
            " WHERE month = '2026-02-01'"
        )
        audit = await analytics.audit(WriteModelReference(app.pool))
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
        "customer_currencies": "orders <> 0 OR value_cents <> 0 OR payments <> 0"
        " OR paid_cents <> 0",
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


class Payments:
    """The payments process as raw events (with the write tables' ``payment_status``)."""

    def __init__(self, shop: Shop) -> None:
        self.shop = shop
        self.charges = 0

    async def capture(self, order: str) -> None:
        total, currency = await self.shop.pool.fetchrow(
            "SELECT total_cents, currency FROM orders WHERE id = $1::uuid", order
        )
        await self.shop.set_order_status(order, "CONFIRMED")
        await self.shop.payment(order, ev.PAYMENT_REQUESTED, "PENDING", amount_cents=total,
                                currency=currency, attempt=1)  # fmt: skip
        self.charges += 1
        await self.shop.payment(order, ev.PAYMENT_CAPTURED, "CAPTURED", amount_cents=total,
                                currency=currency, provider_charge_id=f"ch_{self.charges}")  # fmt: skip

    async def fail(self, order: str) -> None:
        await self.shop.set_order_status(order, "CONFIRMED")
        await self.shop.payment(order, ev.PAYMENT_REQUESTED, "PENDING", amount_cents=1,
                                currency="EUR", attempt=1)  # fmt: skip
        await self.shop.payment(order, ev.PAYMENT_FAILED, "FAILED", reason="declined",
                                retryable=False)  # fmt: skip

    async def cancel(self, order: str) -> None:
        """Cancel a captured order: the refund is requested (the payment still counts)."""
        await self.shop.set_order_status(order, "CANCELLED")
        await self.shop.payment(order, ev.REFUND_REQUESTED, None, provider_charge_id="ch",
                                amount_cents=1)  # fmt: skip

    async def refund(self, order: str) -> None:
        await self.shop.payment(order, ev.PAYMENT_REFUNDED, "REFUNDED", provider_refund_id="re",
                                amount_cents=1)  # fmt: skip


async def _token(pool: asyncpg.Pool) -> str:
    row = await pool.fetchrow(
        "SELECT xid::text::bigint AS xid, seq FROM events ORDER BY xid DESC, seq DESC LIMIT 1"
    )
    return encode_token(Position(row["xid"], row["seq"]))


async def _stats(stub: Any, pool: asyncpg.Pool, *customers: str) -> list[Any]:
    """Each customer's GetCustomerStats from both sources (they must be equal)."""
    token = await _token(pool)
    answers = []
    for customer in customers:
        by_source = []
        for source in SOURCES:
            request = qpb.GetCustomerStatsRequest(customer_id=customer, source=source,
                                                  consistency_token=token)  # fmt: skip
            reply = await stub.GetCustomerStats(request, timeout=20)
            reply.ClearField("freshness")
            by_source.append(reply)
        assert by_source[0] == by_source[1], customer
        answers.append(by_source[0])
    return answers


def _currency(cur: str, orders: int, value: int, payments: int, paid: int) -> Any:
    return an.CustomerCurrencyStats(
        currency=cur, orders=orders, lifetime_value_cents=value,
        avg_order_value_cents=value // orders if orders else 0, payments=payments,
        paid_value_cents=paid,
    )  # fmt: skip


async def test_payments_from_both_sources_and_after_a_rebuild(settings: Settings) -> None:
    pool = await open_pool(settings)
    shop, pay = Shop(pool), Payments(Shop(pool))
    try:
        async with running_system(settings) as (_, stub):
            eur = await shop.create_product(price_cents=1000, currency="EUR")
            usd = await shop.create_product(price_cents=700, currency="USD")
            a, b = await shop.create_customer(), await shop.create_customer()
            o1 = await shop.place_order(a, [(eur, 2)])  # EUR 2000, captured
            o2 = await shop.place_order(a, [(eur, 1)])  # EUR 1000, captured, then refunded
            o3 = await shop.place_order(a, [(usd, 1)], currency="USD")  # USD 700, captured
            o4 = await shop.place_order(a, [(eur, 3)])  # EUR 3000, its payment fails
            o5 = await shop.place_order(b, [(usd, 2)], currency="USD")  # USD 1400
            for order in (o1, o2, o3, o5):
                await pay.capture(order)
            await pay.fail(o4)
            at = {
                str(r["id"]): r["created_at"]
                for r in await pool.fetch("SELECT id, created_at FROM orders")
            }
            (stats_a,) = await _stats(stub, pool, a)
            assert stats_a == an.CustomerStats(
                customer_id=a, total_orders=4, total_payments=3,
                first_order_at=timestamp(at[o1]), last_order_at=timestamp(at[o4]),
                by_currency=[_currency("EUR", 3, 6000, 2, 3000), _currency("USD", 1, 700, 1, 700)],
            )  # fmt: skip

            await pay.cancel(o2)  # cancelled: not an order any more, still a payment
            (stats_a,) = await _stats(stub, pool, a)
            assert (stats_a.total_orders, stats_a.cancelled_orders, stats_a.total_payments) == (
                3, 1, 3,
            )  # fmt: skip
            assert stats_a.by_currency[0] == _currency("EUR", 2, 5000, 2, 3000)
            await pay.refund(o2)  # the refund takes it out
            await shop.delete_order(o2)  # deleting a refunded order changes no payment
            await pay.cancel(o3)
            await shop.delete_order(o3)  # deleted before its refund: the payment goes with it
            await pay.refund(o3)  # the late refund of a deleted order changes nothing
            await pay.cancel(o5)  # B: a payment in a currency without a counting order
            stats_a, stats_b = await _stats(stub, pool, a, b)
            expected_a = an.CustomerStats(
                customer_id=a, total_orders=2, total_payments=1,
                first_order_at=timestamp(at[o1]), last_order_at=timestamp(at[o4]),
                by_currency=[_currency("EUR", 2, 5000, 1, 2000)],
            )  # fmt: skip
            expected_b = an.CustomerStats(
                customer_id=b, cancelled_orders=1, total_payments=1,
                by_currency=[_currency("USD", 0, 0, 1, 1400)],
            )  # fmt: skip
            assert (stats_a, stats_b) == (expected_a, expected_b)

        async with open_app(settings) as app:
            audit = await app.consumer("pg:analytics").audit(WriteModelReference(app.pool))
            assert audit is not None and audit.differences == [], audit.differences
            before = await _snapshot(app.pool)
            await rebuild_one(app.consumer("pg:analytics"), app.pool, 3)
            assert await _snapshot(app.pool) == before
            await app.pool.execute(
                "UPDATE analytics.customer_currencies SET paid_cents = paid_cents + 1"
                " WHERE customer_id = $1::uuid",
                b,
            )
            audit = await app.consumer("pg:analytics").audit(WriteModelReference(app.pool))
            assert audit is not None
            assert [line.split(":")[0] for line in audit.differences] == [
                "customer currencies", "customer currencies",
            ], audit.differences  # fmt: skip
            await app.pool.execute(
                "UPDATE analytics.customer_currencies SET paid_cents = paid_cents - 1"
                " WHERE customer_id = $1::uuid",
                b,
            )
        async with running_system(settings) as (_, stub):
            assert await _stats(stub, pool, a, b) == [expected_a, expected_b]
    finally:
        await pool.close()


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
