"""The seeder writes the same rows and events the commands would."""

from __future__ import annotations

import json

import asyncpg

from common.settings import Settings
from cqrs.seed import seed
from tests.contract.write_model import customer, product
from write_server.adapters.memory import InMemoryStore, InMemoryUnitOfWork
from write_server.domain import commands
from write_server.service_layer.service import CommandService


async def _payload_keys_from_commands() -> dict[str, set[str]]:
    store = InMemoryStore()
    service = CommandService(lambda: InMemoryUnitOfWork(store))
    p = await service.execute(product())
    cu = await service.execute(customer())
    await service.execute(
        commands.PlaceOrder(customer_id=cu.id, items=(commands.OrderItemRequest(p.id, 1),))
    )
    return {r.event.event_type: set(r.event.payload()) for r in store.events}


async def test_seed_matches_what_commands_produce(settings: Settings) -> None:
    assert await seed(settings, products=40, customers=15, orders_per_customer=2) == 0
    conn = await asyncpg.connect(settings.asyncpg_dsn)
    try:
        counts = dict(
            await conn.fetch("SELECT event_type, count(*) FROM events GROUP BY event_type")
        )
        items = await conn.fetchval("SELECT count(*) FROM order_items")
        samples = await conn.fetch(
            "SELECT DISTINCT ON (event_type) event_type, payload FROM events ORDER BY event_type"
        )
        mismatched = await conn.fetchval(
            """SELECT count(*) FROM products p CROSS JOIN LATERAL (
                 SELECT e.aggregate_version AS version,
                        coalesce((e.payload->>'stock')::int, p.stock) AS stock
                 FROM events e WHERE e.aggregate_id = p.id
                 ORDER BY e.aggregate_version DESC LIMIT 1) last
               WHERE (p.version, p.stock) IS DISTINCT FROM (last.version, last.stock)"""
        )
        totals_ok = await conn.fetchval(
            """SELECT bool_and(o.total_cents = s.total) FROM orders o JOIN (
                 SELECT order_id, sum(line_total_cents) AS total FROM order_items GROUP BY 1) s
               ON s.order_id = o.id"""
        )
    finally:
        await conn.close()
    assert counts["ProductCreated"] == 40
    assert counts["CustomerCreated"] == 15
    assert counts["OrderPlaced"] == 30
    assert counts["ProductStockReserved"] == items
    assert mismatched == 0
    assert totals_ok
    expected = await _payload_keys_from_commands()
    for row in samples:
        assert set(json.loads(row["payload"])) == expected[row["event_type"]], row["event_type"]


async def test_seed_with_history_and_two_currencies(settings: Settings) -> None:
    """--months spreads the orders over calendar months in ascending time, after the products
    and customers; --usd-share prices some products in USD; each order has one currency."""
    assert (
        await seed(
            settings, products=60, customers=30, orders_per_customer=4, months=6, usd_share=0.25
        )
        == 0
    )
    conn = await asyncpg.connect(settings.asyncpg_dsn)
    try:
        currencies = dict(
            await conn.fetch("SELECT currency, count(*) FROM products GROUP BY currency")
        )
        mixed = await conn.fetchval(
            """SELECT count(*) FROM orders o JOIN order_items i ON i.order_id = o.id
               JOIN products p ON p.id = i.product_id WHERE p.currency <> o.currency"""
        )
        months = await conn.fetchval(
            "SELECT count(DISTINCT date_trunc('month', created_at AT TIME ZONE 'UTC')) FROM orders"
        )
        first_order = await conn.fetchval("SELECT min(created_at) FROM orders")
        last_entity = await conn.fetchval(
            "SELECT greatest((SELECT max(created_at) FROM products),"
            " (SELECT max(created_at) FROM customers))"
        )
        placed = [
            r["occurred_at"]
            for r in await conn.fetch(
                "SELECT occurred_at FROM events WHERE event_type = 'OrderPlaced' ORDER BY seq"
            )
        ]
        times_match = await conn.fetchval(
            """SELECT bool_and(e.occurred_at = o.created_at) FROM events e
               JOIN orders o ON o.id = e.aggregate_id WHERE e.event_type = 'OrderPlaced'"""
        )
        returning = await conn.fetchval(
            """SELECT count(*) FROM (SELECT customer_id FROM orders GROUP BY 1
               HAVING count(DISTINCT date_trunc('month', created_at)) > 1) c"""
        )
    finally:
        await conn.close()
    assert currencies == {"EUR": 45, "USD": 15}
    assert mixed == 0
    assert len(placed) == 120 and placed == sorted(placed)
    assert months == 6
    assert last_entity < first_order
    assert times_match
    assert returning > 0  # a customer's orders are scattered over the months


def test_span_start_and_order_times() -> None:
    from datetime import UTC, datetime

    from cqrs.seed import order_times, span_start

    now = datetime(2026, 2, 15, 12, tzinfo=UTC)
    assert span_start(now, 0) == now
    assert span_start(now, 1) == datetime(2026, 2, 1, tzinfo=UTC)
    assert span_start(now, 3) == datetime(2025, 12, 1, tzinfo=UTC)
    assert span_start(now, 26) == datetime(2024, 1, 1, tzinfo=UTC)
    times = order_times(span_start(now, 3), now, 5)
    assert times == sorted(times) and span_start(now, 3) < times[0] and times[-1] == now
    # A month that began an hour ago still gets its share (seeded on the 1st of a month).
    first_hour = datetime(2026, 12, 1, 1, tzinfo=UTC)
    times = order_times(span_start(first_hour, 6), first_hour, 120)
    assert {t.month for t in times} == {7, 8, 9, 10, 11, 12}
