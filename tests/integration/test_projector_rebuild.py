"""Rebuild: fresh install, switching under a live projector and readers, failures."""

from __future__ import annotations

import asyncio
import io
import uuid

import pytest

from common import events as ev
from common.entities import ENTITIES, PRODUCTS
from common.redis_keys import ProjectionKeys
from projector import rebuild as rebuild_module
from projector.bootstrap import App
from projector.leadership import lock_key
from projector.stores.redis_generations import active_generation, generations, new_generation
from tests.support.events import NewEvent, Shop, append_events, now
from tests.support.projector import (
    below_the_horizon,
    some_history,
    verify_quietly,
    wait_applied,
)

pytestmark = pytest.mark.integration

# What a reader does: resolve `active`, list the index newest first, read the documents,
# all in one script (one round trip, one generation).
READ_ALL_PRODUCTS = """
local g = redis.call('GET', KEYS[1])
if not g then return {'', 0, 0} end
local base = ARGV[1] .. 'g' .. g .. ':'
local members = redis.call('ZRANGE', base .. 'idx:all', '+', '-', 'BYLEX', 'REV')
local ids = {}
for i, m in ipairs(members) do ids[i] = string.sub(m, 18) end
local missing = 0
if #ids > 0 then
  local docs = redis.call('HMGET', base .. 'docs', unpack(ids))
  for i = 1, #ids do if not docs[i] then missing = missing + 1 end end
end
return {g, #members, missing}
"""


async def rebuild(app: App, *families: str) -> tuple[int, str]:
    out = io.StringIO()
    code = await rebuild_module.rebuild(
        app.select(families),
        app.pool,
        dsn=app.settings.asyncpg_dsn,
        batch_size=app.settings.projector_batch_size,
        out=out,
    )
    return code, out.getvalue()


async def index_names(app: App, table: str) -> set[str]:
    rows = await app.pool.fetch(
        "SELECT indexname FROM pg_indexes WHERE schemaname = 'read' AND tablename = $1", table
    )
    return {r["indexname"] for r in rows}


async def test_fresh_install_rebuild_builds_and_activates(app: App) -> None:
    await some_history(Shop(app.pool))
    keys = ProjectionKeys(app.settings.redis_prefix, "orders")
    abandoned = await new_generation(app.redis, keys)  # a crashed earlier rebuild
    migrated = {k.table: await index_names(app, k.table) for k in ENTITIES}

    code, report = await rebuild(app)

    assert code == 0, report
    assert report.count("events ->") == len(app.select(None)) == 7  # not webhooks:fanout
    assert "rebuild pg:analytics" in report
    differences, diff_report = await verify_quietly(app)
    assert differences == 0, diff_report
    for kind in ENTITIES:
        assert await index_names(app, kind.table) == migrated[kind.table]
    shadows = await app.pool.fetchval(
        "SELECT count(*) FROM pg_tables WHERE schemaname = 'read' AND tablename LIKE '%rebuild'"
    )
    assert shadows == 0
    active = await active_generation(app.redis, keys)
    assert active is not None and active != abandoned
    assert await generations(app.redis, keys) == {active}
    checkpoints = await app.pool.fetch("SELECT projection FROM read.projection_checkpoints")
    assert {r["projection"] for r in checkpoints} == {
        "pg:products", "pg:customers", "pg:orders", "pg:analytics"
    }  # fmt: skip
    copies = "SELECT count(*) FROM pg_namespace WHERE nspname = 'analytics__rebuild'"
    assert await app.pool.fetchval(copies) == 0


async def test_rebuild_switches_under_a_live_projector_and_readers(
    app: App,
) -> None:
    """(e) Readers never see a partial list while rebuild switches; the live runner goes on."""
    shop = Shop(app.pool)
    initial = 120
    for i in range(initial):
        await shop.create_product(category=("a", "b", "c")[i % 3])
    projections = ["redis:products", "pg:products"]
    stop = asyncio.Event()
    run = asyncio.create_task(app.projector(projections).run(stop))
    keys = ProjectionKeys(app.settings.redis_prefix, "products")
    reader_script = app.redis.register_script(READ_ALL_PRODUCTS)
    problems: list[str] = []
    seen_generations: set[str] = set()
    reads = {"redis": 0, "pg": 0}
    done = asyncio.Event()

    async def read_redis() -> None:
        last = initial
        while not done.is_set():
            gen, count, missing = await reader_script(keys=[keys.active], args=[keys.base + ":"])
            seen_generations.add(gen.decode())
            if count < last or missing:
                problems.append(f"redis g{gen!r}: {count} listed (last {last}), {missing} missing")
            last = max(last, count)
            reads["redis"] += 1

    async def read_pg() -> None:
        last = initial
        async with app.pool.acquire() as conn:
            while not done.is_set():
                rows = await conn.fetch(
                    "SELECT id FROM read.product_read_model ORDER BY created_at DESC, id DESC"
                )
                if len(rows) < last:
                    problems.append(f"pg: {len(rows)} rows (last {last})")
                last = max(last, len(rows))
                reads["pg"] += 1

    try:
        await wait_applied(app, projections)
        writes = shop.create_products_until(done)
        workers = [asyncio.create_task(c) for c in (writes, read_redis(), read_pg())]
        await asyncio.sleep(0.2)
        code, report = await rebuild(app, "products")
        await asyncio.sleep(0.3)  # the live runner continues on the new copy
        done.set()
        await asyncio.gather(*workers)
        assert code == 0, report
        await wait_applied(app, projections)
        differences, diff_report = await verify_quietly(app, projections)
        assert differences == 0, diff_report
    finally:
        done.set()
        stop.set()
        await asyncio.wait_for(run, 10)
    assert problems == []
    assert len(seen_generations) >= 2, "the readers never saw the switch"
    assert reads["redis"] > 10 and reads["pg"] > 10
    assert await generations(app.redis, keys) == {await active_generation(app.redis, keys)}


async def test_second_rebuild_of_the_same_kind_is_refused(app: App) -> None:
    async with app.pool.acquire() as conn:
        assert await conn.fetchval(
            "SELECT pg_try_advisory_lock($1)", lock_key("rebuild:redis:products")
        )
        try:
            code, report = await rebuild(app, "products")
        finally:
            await conn.execute("SELECT pg_advisory_unlock_all()")
    assert code == 1
    assert "another rebuild is running" in report


async def test_poison_event_aborts_the_rebuild_and_leaves_the_live_copy(
    app: App,
) -> None:
    shop = Shop(app.pool)
    await shop.create_product()
    stop = asyncio.Event()
    projections = ["redis:products", "pg:products"]
    run = asyncio.create_task(app.projector(projections).run(stop))
    try:
        await wait_applied(app, projections)
    finally:
        stop.set()
        await asyncio.wait_for(run, 10)
    keys = ProjectionKeys(app.settings.redis_prefix, PRODUCTS.name)
    live_gen = await active_generation(app.redis, keys)
    async with app.pool.acquire() as conn, conn.transaction():
        await append_events(
            conn,
            [
                NewEvent(
                    ev.PRODUCT, str(uuid.uuid4()), 2, ev.PRODUCT_UPDATED, {"changes": {}}, now()
                )
            ],
        )
    await below_the_horizon(app)  # else a rebuild may stop before the poison event

    code, report = await rebuild(app, "products")

    assert code == 1 and "FAILED" in report and "no document" in report
    assert await active_generation(app.redis, keys) == live_gen
    assert await generations(app.redis, keys) == {live_gen}
    assert await app.pool.fetchval("SELECT count(*) FROM read.product_read_model") == 1
    shadow = await app.pool.fetchval("SELECT to_regclass('read.product_read_model__rebuild')")
    assert shadow is None
