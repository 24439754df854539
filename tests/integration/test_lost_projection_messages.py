"""What readers are told while a Redis projection that lost its data is rebuilt: "is being
rebuilt" (and, before the projector has begun, that the projector builds it), never "has
not been built yet (is the projector running?)", which sent operators looking for a
projector that was running all along.

Real PostgreSQL (a seeded log, so the rebuild takes a while), real Redis (the projection's
keys deleted as a restart would), the projector's runners, the read server's sources.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from common.entities import PRODUCTS
from common.errors import Unavailable
from cqrs.seed import seed
from projector.bootstrap import App
from read_server.bootstrap import bootstrap as open_reader
from read_server.sources.base import Freshness
from tests.conftest import delete_redis_prefix
from tests.support.events import Shop
from tests.support.projector import wait_applied

pytestmark = pytest.mark.integration


async def test_a_lost_projection_is_said_to_be_rebuilt(app: App) -> None:
    assert await seed(app.settings, products=3000, customers=300, orders_per_customer=4) == 0
    seen, product = [str(r["id"]) for r in await app.pool.fetch("SELECT id FROM products LIMIT 2")]
    stop = asyncio.Event()
    projector = asyncio.create_task(app.projector().run(stop))
    reader = await open_reader(app.settings)
    try:
        await wait_applied(app, within=60)
        source = reader.sources.projection
        assert await source.get(PRODUCTS, seen, Freshness()) is not None
        # (``product`` is read only from here on: the near-cache has never seen it.)
        await delete_redis_prefix(app.settings.redis_prefix)  # as a Redis restart would
        await Shop(app.pool).create_product()  # the runners meet the lost store
        told: list[str] = []
        deadline = time.monotonic() + 60
        while True:
            try:
                if await source.get(PRODUCTS, product, Freshness()) is not None:
                    break
            except Unavailable as exc:
                told.append(str(exc))
            assert time.monotonic() < deadline, told[-3:]
            await asyncio.sleep(0.005)
    finally:
        stop.set()
        await asyncio.wait_for(projector, 30)
        await reader.close()
    assert told, "the read never saw the projection missing"
    assert not [m for m in told if "is the projector running" in m], sorted(set(told))
    assert any("is being rebuilt" in m for m in told), sorted(set(told))
