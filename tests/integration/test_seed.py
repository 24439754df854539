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
