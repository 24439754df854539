"""Consistency tokens: each source waits for its own projection's checkpoint, bounded."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import pytest
import redis.asyncio as aioredis

from common.entities import CUSTOMERS, ORDERS, PRODUCTS
from common.errors import Unavailable
from common.positions import Position
from common.redis_client import redis_client as open_redis
from common.redis_keys import ProjectionKeys
from common.settings import Settings
from read_server.sources.base import Freshness, PageRequest
from tests.support.read_fixtures import (
    CHECKPOINT,
    GENERATION,
    Loaded,
    loaded_sources,
    set_pg_checkpoint,
    set_redis_checkpoint,
)

pytestmark = pytest.mark.integration

AHEAD = Position(CHECKPOINT.xid, CHECKPOINT.seq + 7)


@pytest.fixture
async def loaded(settings: Settings) -> AsyncIterator[Loaded]:
    async with loaded_sources(settings) as loaded:
        yield loaded


@pytest.fixture
async def redis_client(settings: Settings) -> AsyncIterator[aioredis.Redis]:
    client = open_redis(settings.redis_url, max_connections=4)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def pg(settings: Settings) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(settings.asyncpg_dsn)
    try:
        yield conn
    finally:
        await conn.close()


async def _later(delay: float, action: Callable[[], Awaitable[None]]) -> None:
    await asyncio.sleep(delay)
    await action()


async def test_reached_positions_answer_at_once(loaded: Loaded) -> None:
    product = loaded.ds.products[0]
    # (999, 900) < (1000, 50): fixed-width strings compare like the tuples, also in Lua.
    for position in (CHECKPOINT, Position(CHECKPOINT.xid - 1, 900), Position(1, 1)):
        for source in loaded.sources():
            started = time.perf_counter()
            doc = await source.get(PRODUCTS, product.id, Freshness(position, 5.0))
            assert doc == product.SerializeToString()
            assert time.perf_counter() - started < 0.5


async def test_write_model_never_waits(loaded: Loaded) -> None:
    far_ahead = Freshness(Position(10**12, 0), 5.0)
    write_model = loaded.app.sources.write_model
    started = time.perf_counter()
    page = await write_model.list(ORDERS, PageRequest(5), {}, far_ahead)
    assert len(page.items) == 5
    assert time.perf_counter() - started < 0.5


async def test_projection_waits_for_its_checkpoint(
    loaded: Loaded, settings: Settings, redis_client: aioredis.Redis
) -> None:
    product = loaded.ds.products[0]
    prefix = settings.redis_prefix

    async def catch_up() -> None:
        # Another projection moving on must not release the wait.
        await set_redis_checkpoint(redis_client, prefix, "customers", AHEAD)
        await asyncio.sleep(0.1)
        await set_redis_checkpoint(redis_client, prefix, "products", AHEAD)

    started = time.perf_counter()
    catching_up = asyncio.create_task(_later(0.1, catch_up))
    doc = await loaded.app.sources.projection.get(PRODUCTS, product.id, Freshness(AHEAD, 3.0))
    elapsed = time.perf_counter() - started
    await catching_up
    assert doc == product.SerializeToString()
    assert 0.2 <= elapsed < 2.0


async def test_read_model_lists_wait_for_their_checkpoint(
    loaded: Loaded, pg: asyncpg.Connection
) -> None:
    async def catch_up() -> None:
        await set_pg_checkpoint(pg, "pg:products", AHEAD)
        await asyncio.sleep(0.1)
        await set_pg_checkpoint(pg, "pg:orders", AHEAD)

    started = time.perf_counter()
    catching_up = asyncio.create_task(_later(0.1, catch_up))
    page = await loaded.app.sources.read_model.list(
        ORDERS, PageRequest(3), {}, Freshness(AHEAD, 3.0)
    )
    elapsed = time.perf_counter() - started
    await catching_up
    assert len(page.items) == 3
    assert 0.2 <= elapsed < 2.0


async def test_wait_times_out_with_unavailable(loaded: Loaded) -> None:
    sources = loaded.app.sources
    customer = loaded.ds.customers[0]
    cases = [
        ("redis:customers", sources.projection),
        ("pg:customers", sources.read_model),
    ]
    for name, source in cases:
        started = time.perf_counter()
        with pytest.raises(Unavailable) as caught:
            await source.get(CUSTOMERS, customer.id, Freshness(AHEAD, 0.15))
        elapsed = time.perf_counter() - started
        assert caught.value.message == (
            f"projection {name} has not caught up with the consistency token within 150 ms"
        )
        assert 0.15 <= elapsed < 1.0


async def test_a_read_model_without_checkpoint_is_being_built(
    loaded: Loaded, pg: asyncpg.Connection
) -> None:
    """No checkpoint row: the projector has not built it (yet): never serve the table."""
    await pg.execute("DELETE FROM read.projection_checkpoints WHERE projection = 'pg:products'")
    read_model = loaded.app.sources.read_model
    with pytest.raises(Unavailable, match="pg:products"):
        await read_model.list(PRODUCTS, PageRequest(1), {}, Freshness(Position(1, 1), 0.05))
    with pytest.raises(Unavailable, match="projection pg:products is being built"):
        await read_model.list(PRODUCTS, PageRequest(1), {}, Freshness())
    await set_pg_checkpoint(pg, "pg:products", CHECKPOINT)  # built
    page = await read_model.list(PRODUCTS, PageRequest(1), {}, Freshness())
    assert len(page.items) == 1


async def test_projection_never_built_is_unavailable(
    loaded: Loaded, settings: Settings, redis_client: aioredis.Redis
) -> None:
    keys = ProjectionKeys(settings.redis_prefix, "orders")
    await redis_client.delete(keys.active, keys.next_gen)
    projection = loaded.app.sources.projection
    order = loaded.ds.orders[0]
    with pytest.raises(Unavailable, match="redis:orders is not built"):
        await projection.get(ORDERS, order.id, Freshness())
    with pytest.raises(Unavailable, match="redis:orders is not built"):
        await projection.list(ORDERS, PageRequest(10), {}, Freshness(AHEAD, 1.0))
    # The other projections are unaffected.
    assert await projection.get(CUSTOMERS, loaded.ds.customers[0].id, Freshness()) is not None


async def test_projection_being_rebuilt_or_lost_is_unavailable(
    loaded: Loaded, settings: Settings, redis_client: aioredis.Redis
) -> None:
    """Never a NOT_FOUND or an empty page for a projection that is not whole."""
    projection = loaded.app.sources.projection
    order = loaded.ds.orders[0]
    # The active generation lost its checkpoint (keys vanished): lost.
    keys = ProjectionKeys(settings.redis_prefix, "orders")
    await redis_client.delete(keys.checkpoint(GENERATION))
    with pytest.raises(Unavailable, match="redis:orders lost its data"):
        await projection.get(ORDERS, order.id, Freshness())
    # No active generation, but one was allocated: a rebuild is filling it.
    await redis_client.delete(keys.active)
    with pytest.raises(Unavailable, match="redis:orders is being rebuilt"):
        await projection.list(ORDERS, PageRequest(10), {}, Freshness())
