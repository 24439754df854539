"""A Redis projection spread over keyspaces (``CQRS_REDIS_SPREAD``) rebuilt under a live
projector and readers: ``cqrs projector rebuild`` rebuilds it shard by shard, each into a new
generation of its own keyspace switched in alone; readers paging through the real read path
(a page per shard, merged) never see a shorter list, a hole or an error; the live runners go
on, and ``verify`` is clean."""

from __future__ import annotations

import asyncio
import io

import pytest

from common.entities import PRODUCTS
from common.redis_keys import keyspaces
from projector import rebuild as rebuild_module
from projector.bootstrap import open_app
from projector.stores.redis_generations import active_generation, generations
from read_server.sources.base import Freshness, PageRequest
from read_server.sources.projection import ProjectionSource
from tests.conftest import fresh_settings
from tests.support.events import Shop
from tests.support.projector import verify_quietly, wait_applied

pytestmark = pytest.mark.integration

SHARDS = 3


async def test_a_spread_projection_is_rebuilt_shard_by_shard_under_readers(
    template_database: str,
) -> None:
    async with (
        fresh_settings(
            template_database, projector_segments=f"redis:products={SHARDS}", redis_spread=True
        ) as settings,
        open_app(settings) as app,
    ):
        shop = Shop(app.pool)
        initial = 60
        for i in range(initial):
            await shop.create_product(category=("a", "b")[i % 2])
        projections = ["redis:products"]
        stop = asyncio.Event()
        run = asyncio.create_task(app.projector(projections).run(stop))
        source = ProjectionSource(app.redis, settings.redis_prefix, shards={"products": SHARDS})
        spaces = keyspaces(settings.redis_prefix, "products", SHARDS)
        problems: list[str] = []
        pages = 0
        done = asyncio.Event()

        async def read() -> None:
            nonlocal pages
            last = initial
            while not done.is_set():
                ids: list[bytes] = []
                # Pages of 20 ask each shard for 13: shorter shard pages, some read again.
                page = PageRequest(size=20)
                while True:
                    found = await source.list(PRODUCTS, page, {}, Freshness())
                    ids += found.items
                    pages += 1
                    if found.next_key is None:
                        break
                    page = PageRequest(size=20, after=found.next_key)
                if len(ids) < last or len(set(ids)) != len(ids):
                    problems.append(f"{len(ids)} listed ({len(set(ids))} distinct), last {last}")
                last = max(last, len(ids))

        try:
            await wait_applied(app, projections)
            before = [await active_generation(app.redis, keys) for keys in spaces]
            writes = shop.create_products_until(done)
            workers = [asyncio.create_task(c) for c in (writes, read())]
            await asyncio.sleep(0.2)
            out = io.StringIO()
            chosen = app.rebuilt_as(app.select(["products"]))
            assert [c.name for c in chosen if c.name.startswith("redis:")] == [
                f"redis:products#{i}/{SHARDS}" for i in range(SHARDS)
            ]
            code = await rebuild_module.rebuild(
                [c for c in chosen if c.name.startswith("redis:")],
                app.pool,
                dsn=settings.asyncpg_dsn,
                batch_size=settings.projector_batch_size,
                out=out,
            )
            await asyncio.sleep(0.3)  # the live runners continue on the new generations
            done.set()
            await asyncio.gather(*workers)
            assert code == 0, out.getvalue()
            await wait_applied(app, projections)
            differences, report = await verify_quietly(app, projections)
            assert differences == 0, report
        finally:
            done.set()
            stop.set()
            await asyncio.wait_for(run, 10)
        assert problems == []
        assert pages > 10
        after = [await active_generation(app.redis, keys) for keys in spaces]
        for keys, old, new in zip(spaces, before, after, strict=True):
            assert new is not None and new != old, (keys.tag, old, new)
            assert await generations(app.redis, keys) == {new}  # the old one deleted
