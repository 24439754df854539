"""``cqrs projector verify`` while writes flow: it compares each consumer with the write
model at the same position of the log, so a healthy system under load shows no
difference (it used to report thousands: the write model was read first and the
projections, read after, looked *ahead*), while a tampered document is still found.

Real PostgreSQL and Redis; the projector's runners follow the log while several writers
place, change and cancel orders and rename customers (whose contact the order documents
embed).
"""

from __future__ import annotations

import asyncio
import contextlib
import random

import pytest

from projector.bootstrap import App
from tests.support.projector import projection, verify_quietly, wait_applied
from write_server.adapters.postgres_uow import open_pool
from write_server.bootstrap import command_service
from write_server.domain import commands as c
from write_server.service_layer.service import CommandService

pytestmark = pytest.mark.integration


async def _write_until(
    stop: asyncio.Event, service: CommandService, products: list[str], customers: list[str]
) -> int:
    rng = random.Random()
    done = 0
    while not stop.is_set():
        customer = rng.choice(customers)
        items = (c.OrderItemRequest(rng.choice(products), 1),)
        order = await service.execute(c.PlaceOrder(customer_id=customer, items=items))
        await service.execute(c.UpdateCustomer(id=customer, changes={"name": f"name {done}"}))
        price = {"price_cents": rng.randint(100, 9999)}
        await service.execute(c.UpdateProduct(id=rng.choice(products), changes=price))
        action = rng.choice(("confirm", "cancel"))
        await service.execute(c.ChangeOrderStatus(id=order.id, action=action))
        done += 4
    return done


async def _product(service: CommandService, name: str) -> str:
    made = await service.execute(
        c.CreateProduct(name=name, price_cents=1000, currency="EUR", stock=1_000_000)
    )
    return made.id


async def test_verify_is_clean_under_load_and_finds_a_tampered_document(app: App) -> None:
    pool = await open_pool(app.settings)
    service = command_service(pool)
    products = [await _product(service, f"product {n}") for n in range(8)]
    customers = [
        (await service.execute(c.CreateCustomer(name=f"c{n}", email=f"c{n}@example.org"))).id
        for n in range(4)
    ]
    bystander = await _product(service, "nobody writes to me")
    stop_projector = asyncio.Event()
    projector = asyncio.create_task(app.projector().run(stop_projector))
    stop_writing = asyncio.Event()
    writers = [
        asyncio.create_task(_write_until(stop_writing, service, products, customers))
        for _ in range(3)
    ]
    try:
        await wait_applied(app)
        await asyncio.sleep(0.5)  # the writers are going
        reports = []
        for _ in range(3):
            differences, report = await verify_quietly(app)
            reports.append(report)
            assert differences == 0, report
        # The load really overlapped the comparisons: something was in flight.
        assert any("in flight (not compared)" in r for r in reports), reports

        # A document nobody is changing, tampered in both stores: found under load.
        table = projection(app, "pg:products").store.table  # type: ignore[attr-defined]
        await app.pool.execute(
            f"UPDATE {table} SET price_cents = price_cents + 1 WHERE id = $1", bystander
        )
        redis_products = projection(app, "redis:products").store
        docs = redis_products.keys.docs(redis_products.generation or 0)  # type: ignore[attr-defined]
        doc = (await redis_products.load([bystander]))[bystander]
        doc.price_cents += 1  # type: ignore[attr-defined]
        await app.redis.hset(docs, bystander, doc.SerializeToString())
        differences, report = await verify_quietly(app)
        assert differences == 2, report
        assert f"pg:products {bystander}: price_cents" in report
        assert f"redis:products {bystander}: price_cents" in report
    finally:
        stop_writing.set()
        written = await asyncio.gather(*writers)
        stop_projector.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(projector, 10)
        await pool.close()
    assert sum(written) > 200, written
