"""Commands take their advisory locks in one sorted order, so two orders for the same
products in opposite order can never deadlock.

Deterministic: two sessions of the test hold the products' locks; ``PlaceOrder`` of
[A, B] and of [B, A] start and queue behind them; A is released, then B. Locking in
request order, the first order would now hold A and wait for B while the second, queued
first on B, takes B and waits for A: PostgreSQL's deadlock detector aborts one of them
(``ConcurrencyConflict``). Sorted, both wait for the same lock first and both succeed.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import asyncpg
import pytest

from common.settings import Settings
from write_server.adapters.postgres_uow import lock_key, open_pool
from write_server.bootstrap import command_service
from write_server.domain import commands as c
from write_server.service_layer.service import CommandResult

pytestmark = pytest.mark.integration

_WAITING = """
SELECT ((classid::bigint << 32) | objid::bigint) AS k, granted, pid FROM pg_locks
WHERE locktype = 'advisory' AND database = (SELECT oid FROM pg_database
                                           WHERE datname = current_database())
"""


def _unsigned(key: int) -> int:
    return key & 0xFFFFFFFFFFFFFFFF


async def _locks(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    return list(await conn.fetch(_WAITING))


async def _until(conn: asyncpg.Connection, check: object, what: str) -> None:
    deadline = time.monotonic() + 10
    while True:
        rows = await _locks(conn)
        if check(rows):  # type: ignore[operator]
            return
        assert time.monotonic() < deadline, f"{what}: {[dict(r) for r in rows]}"
        await asyncio.sleep(0.01)


async def test_opposite_orders_paused_after_their_first_lock_do_not_deadlock(
    settings: Settings,
) -> None:
    pool = await open_pool(settings)
    service = command_service(pool)
    holders = [await asyncpg.connect(settings.asyncpg_dsn) for _ in range(2)]
    watcher = await asyncpg.connect(settings.asyncpg_dsn)
    try:
        made = [
            await service.execute(
                c.CreateProduct(name=f"p{n}", price_cents=100, currency="EUR", stock=10)
            )
            for n in range(2)
        ]
        # A sorts before B in lock order.
        a, b = sorted((p.id for p in made), key=lock_key)
        customers = [
            (await service.execute(c.CreateCustomer(name=f"c{n}", email=f"c{n}@example.org"))).id
            for n in range(2)
        ]
        key_a, key_b = lock_key(a), lock_key(b)
        hold_a, hold_b = holders
        for conn, key in ((hold_a, key_a), (hold_b, key_b)):
            await conn.execute("BEGIN")
            await conn.execute("SELECT pg_advisory_xact_lock($1)", key)

        def waiting(rows: list[asyncpg.Record]) -> int:
            return sum(1 for r in rows if not r["granted"])

        def place(customer: str, *products: str) -> asyncio.Task[CommandResult]:
            items = tuple(c.OrderItemRequest(p, 1) for p in products)
            return asyncio.create_task(
                service.execute(c.PlaceOrder(customer_id=customer, items=items))
            )

        forward = place(customers[0], a, b)
        await _until(watcher, lambda rows: waiting(rows) == 1, "the first order waits")
        backward = place(customers[1], b, a)
        await _until(watcher, lambda rows: waiting(rows) == 2, "both orders wait")
        await hold_a.execute("COMMIT")  # A free: whoever queued on it first takes it

        def a_taken(rows: list[asyncpg.Record]) -> bool:
            return any(r["granted"] and _unsigned(r["k"]) == _unsigned(key_a) for r in rows)

        await _until(watcher, a_taken, "A is taken by a waiting order")
        await hold_b.execute("COMMIT")
        done = await asyncio.wait_for(asyncio.gather(forward, backward), 15)
        assert all(uuid.UUID(r.id) for r in done)
    finally:
        for conn in (*holders, watcher):
            await conn.close()
        await pool.close()
