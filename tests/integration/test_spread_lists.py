"""Lists of a Redis projection spread over three keyspaces, read as the read server reads
them (``ProjectionSource``): each shard asked for a shorter page, merged into the whole
list newest first, once; once the generations are known, every shard call goes over the
pipelined connections (none through redis-py); a token the shards have not reached is
waited for the general way, and UNAVAILABLE when the wait is spent."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import REGISTRY

from common.entities import PRODUCTS
from common.errors import Unavailable
from common.positions import Position
from projector.bootstrap import open_app
from read_server.sources.base import Freshness, PageRequest
from read_server.sources.projection import ProjectionSource
from tests.conftest import fresh_settings
from tests.support.events import Shop
from tests.support.projector import wait_applied

pytestmark = pytest.mark.integration

PROJECTIONS = ["redis:products"]


def _calls(path: str) -> float:
    return REGISTRY.get_sample_value("cqrs_redis_script_calls_total", {"path": path}) or 0.0


async def _every_page(source: ProjectionSource, size: int) -> tuple[list[bytes], list[bytes]]:
    """The documents and members of every page, in order."""
    items: list[bytes] = []
    members: list[bytes] = []
    page = PageRequest(size)
    while True:
        found = await source.list(PRODUCTS, page, {}, Freshness())
        assert len(found.items) == size or found.next_key is None
        items += found.items
        members += found.members
        if found.next_key is None:
            return items, members
        page = PageRequest(size, found.next_key)


async def test_shorter_shard_pages_merge_into_the_whole_list_over_pipelined_calls(
    template_database: str,
) -> None:
    async with (
        fresh_settings(
            template_database, projector_segments="redis:products=3", redis_spread=True
        ) as settings,
        open_app(settings) as app,
    ):
        shop = Shop(app.pool)
        ids = {await shop.create_product() for _ in range(130)}
        stop = asyncio.Event()
        run = asyncio.create_task(app.projector(PROJECTIONS).run(stop))
        source = ProjectionSource(app.redis, settings.redis_prefix, shards={"products": 3})
        try:
            await wait_applied(app, PROJECTIONS)
            # The first lists learn each shard's generation and open the connections.
            for _ in range(100):
                fell_back = _calls("redis_py")
                await _every_page(source, 50)
                if _calls("redis_py") == fell_back:
                    break
                await asyncio.sleep(0.01)
            else:
                pytest.fail("the pipelined connections never opened")
            before = (_calls("pipelined"), _calls("redis_py"))
            for size in (50, 20, 7, 200):
                items, members = await _every_page(source, size)
                assert len(items) == len(set(items)) == len(ids), size
                assert members == sorted(members, reverse=True), size
                assert {m.decode().split("|")[1] for m in members} == ids
            pages = 3 + 7 + 19 + 1
            assert _calls("redis_py") == before[1], "a shard call went through redis-py"
            assert _calls("pipelined") - before[0] >= 3 * pages

            ahead = Freshness(Position(2**62, 0), max_wait_s=0.3)
            with pytest.raises(Unavailable, match="has not caught up"):
                await source.list(PRODUCTS, PageRequest(50), {}, ahead)
        finally:
            stop.set()
            await asyncio.wait_for(run, 10)
            await source.aclose()
