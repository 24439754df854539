"""The continuous audit (projector/audit.py) inside a running projector: a document
tampered behind the projector's back, in Redis and in the PostgreSQL read model, is found
within the audit's period, counted, logged and shown by ``cqrs projector status``; with
repair on, both are rewritten and verify finds the stores equal to the write model again.

Real PostgreSQL and Redis; a high rate over a few dozen documents, so a lap takes well
under a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest
from prometheus_client import REGISTRY

from projector.audit_record import AuditRecord
from projector.bootstrap import App, open_app
from projector.segments import Segment, segment_of
from projector.status import status
from projector.stores.redis_store import RedisProjectionStore
from tests.conftest import fresh_settings
from tests.support.events import Shop, eventually
from tests.support.projector import projection, some_history, verify_quietly, wait_applied
from write_server.adapters.postgres_uow import open_pool
from write_server.bootstrap import command_service
from write_server.domain import commands as c

pytestmark = pytest.mark.integration


def _drifts(name: str) -> float:
    return REGISTRY.get_sample_value("cqrs_audit_drift_total", {"projection": name}) or 0


def _checked(name: str) -> float:
    return REGISTRY.get_sample_value("cqrs_audit_checked_total", {"projection": name}) or 0


@contextlib.asynccontextmanager
async def _running(app: App, *, repair: bool) -> AsyncIterator[None]:
    """``cqrs projector run`` (every consumer, the audit at 500 documents/s) meanwhile."""
    app.settings = replace(app.settings, audit_rate=500.0, audit_repair=repair)
    stop = asyncio.Event()
    task = asyncio.create_task(app.projector().run(stop))
    try:
        yield
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 10)


async def _tamper(app: App, product: str, order: str) -> None:
    """One Redis product and one read-model order changed directly in the stores."""
    redis_products = projection(app, "redis:products").store
    assert isinstance(redis_products, RedisProjectionStore)
    if redis_products.spread:  # the shard that holds it
        shards = redis_products.segments
        redis_products = redis_products.split(Segment(segment_of(product, shards), shards))
    await redis_products.checkpoint()  # its active generation
    doc = (await redis_products.load([product]))[product]
    doc.price_cents += 1  # type: ignore[attr-defined]
    docs = redis_products.keys.docs(redis_products.generation or 0)
    await app.redis.hset(docs, product, doc.SerializeToString())
    pg_orders = projection(app, "pg:orders").store
    row = (await pg_orders.load([order]))[order]
    row.total_cents += 7  # type: ignore[attr-defined]
    await app.pool.execute(
        f"UPDATE {pg_orders.table} SET doc = $2, total_cents = total_cents + 7 WHERE id = $1",  # type: ignore[attr-defined]
        order,
        row.SerializeToString(),
    )


async def test_audit_finds_tampered_documents_and_repair_fixes_them(
    app: App, caplog: pytest.LogCaptureFixture
) -> None:
    shop = Shop(app.pool)
    await some_history(shop, size=8)  # about 60 documents
    product = str(
        await app.pool.fetchval("SELECT id FROM products WHERE deleted_at IS NULL LIMIT 1")
    )
    order = str(await app.pool.fetchval("SELECT id FROM orders WHERE deleted_at IS NULL LIMIT 1"))
    drifts_before = _drifts("redis:products"), _drifts("pg:orders")
    checked_before = _checked("redis:orders")

    caplog.set_level(logging.WARNING, logger="projector.audit")
    async with _running(app, repair=False):
        await wait_applied(
            app, [f"{b}:{f}" for b in ("redis", "pg") for f in ("products", "orders")]
        )
        # Settled and untouched: laps go by without a drift.

        async def lapped() -> bool:
            return _checked("redis:orders") > checked_before + 100

        await eventually(lapped)
        assert (_drifts("redis:products"), _drifts("pg:orders")) == drifts_before

        await _tamper(app, product, order)
        # Found within a period (60 documents at 500/s: about 0.1 s), and lap after lap.

        async def found() -> bool:
            return (
                _drifts("redis:products") > drifts_before[0]
                and _drifts("pg:orders") > drifts_before[1]
            )

        await eventually(found, within=5)
        warned = "\n".join(r.getMessage() for r in caplog.records)
        assert f"redis:products: audit found drift in {product}" in warned
        assert "price_cents: projection=" in warned
        assert f"pg:orders: audit found drift in {order}" in warned

        out = io.StringIO()
        audits = AuditRecord(app.redis, app.settings.redis_prefix)
        await status(app.consumers, app.pool, app.failures, out=out, audits=audits)
        shown = out.getvalue()
        assert "audit redis:products: " in shown and f"last {product}" in shown, shown
        assert f"last {order}" in shown, shown
        assert "audit redis:customers: 0 drift(s)" in shown, shown

        differences, report = await verify_quietly(app, ["redis:products", "pg:orders"])
        assert differences >= 2, report  # not repaired

    async with _running(app, repair=True):

        async def repaired() -> bool:
            differences, _ = await verify_quietly(app)
            return differences == 0

        await eventually(repaired, within=10)
        out = io.StringIO()
        audits = AuditRecord(app.redis, app.settings.redis_prefix)
        await status(app.consumers, app.pool, app.failures, out=out, audits=audits)
        assert f"last {product} at" in out.getvalue() and "repaired" in out.getvalue()
    differences, report = await verify_quietly(app)
    assert differences == 0, report


@pytest.mark.parametrize("spread", [False, True], ids=["one keyspace", "spread"])
async def test_audit_and_repair_on_split_projections(template_database: str, spread: bool) -> None:
    """Split into segments, each segment's leader audits (and repairs, through its own
    checkpoint) the documents it owns; spread, a Redis segment its own keyspace's."""
    async with (
        fresh_settings(
            template_database, projector_segments="*=2", db_pool_size=4, redis_spread=spread
        ) as settings,
        open_app(settings) as app,
    ):
        await some_history(Shop(app.pool), size=6)
        ids = await app.pool.fetch("SELECT id::text AS id FROM orders WHERE deleted_at IS NULL")
        # One order of each segment, tampered in PostgreSQL; a product in Redis.
        orders = {segment_of(r["id"], 2): r["id"] for r in ids}
        assert len(orders) == 2, orders
        product = str(
            await app.pool.fetchval("SELECT id FROM products WHERE deleted_at IS NULL LIMIT 1")
        )
        before, before_redis = _drifts("pg:orders"), _drifts("redis:products")
        async with _running(app, repair=False):
            await wait_applied(app, ["redis:products", "pg:orders"])
            for order in orders.values():
                await _tamper(app, product, order)

            async def found() -> bool:
                return (
                    _drifts("pg:orders") >= before + 2
                    and _drifts("redis:products") >= before_redis + 1
                )

            await eventually(found, within=5)
            out = io.StringIO()
            audits = AuditRecord(app.redis, app.settings.redis_prefix)
            await status(app.consumers, app.pool, app.failures, out=out, audits=audits)
            for segment, order in orders.items():
                assert f"audit pg:orders#{segment}/2: " in out.getvalue(), out.getvalue()
                assert f"last {order}" in out.getvalue(), out.getvalue()
        async with _running(app, repair=True):

            async def repaired() -> bool:
                differences, _ = await verify_quietly(app)
                return differences == 0

            await eventually(repaired, within=10)


async def test_no_drift_while_writes_flow(app: App) -> None:
    """Documents changed while they are sampled are in flight, never a drift (the write
    server's command service, whose locks keep each aggregate's events in order)."""
    pool = await open_pool(app.settings)
    service = command_service(pool)
    products = [
        (
            await service.execute(
                c.CreateProduct(name=f"p{n}", price_cents=100, currency="EUR", stock=1_000_000)
            )
        ).id
        for n in range(6)
    ]
    customers = [
        (await service.execute(c.CreateCustomer(name=f"c{n}", email=f"c{n}@example.org"))).id
        for n in range(3)
    ]
    before = {p: _drifts(p) for p in ("redis:orders", "pg:orders", "redis:products")}
    checked = _checked("pg:orders")
    stop = asyncio.Event()

    async def write(seed: int) -> int:
        done = 0
        while not stop.is_set():
            customer, product = customers[(done + seed) % 3], products[(done + seed) % 6]
            items = (c.OrderItemRequest(product, 1),)
            order = await service.execute(c.PlaceOrder(customer_id=customer, items=items))
            await service.execute(c.UpdateCustomer(id=customer, changes={"name": f"n{done}"}))
            price = {"price_cents": 100 + done}
            await service.execute(c.UpdateProduct(id=product, changes=price))
            await service.execute(c.ChangeOrderStatus(id=order.id, action="confirm"))
            done += 4
        return done

    try:
        async with _running(app, repair=True):
            writers = [asyncio.create_task(write(n)) for n in range(2)]
            await asyncio.sleep(3)
            stop.set()
            written = sum(await asyncio.gather(*writers))
            await wait_applied(app, list(before))

            # While writes flow most orders are in flight (their customer's contact keeps
            # changing), so how many were compared by now depends on timing: at rest the
            # audit goes on and must have compared a hundred more soon.
            async def compared() -> bool:
                return _checked("pg:orders") > checked + 100

            await eventually(compared)
    finally:
        await pool.close()
    assert written > 100, written
    assert {p: _drifts(p) for p in before} == before
    differences, report = await verify_quietly(app)
    assert differences == 0, report
