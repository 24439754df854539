"""``cqrs projector prune-redis`` (projector/redis_prune.py) against real Redis (and, in the
cluster pass of ``make test``, a Redis Cluster): it finds the keyspaces of an older layout and
of a spread no longer configured, deletes them only when asked, never touches the ones in use,
the audit's keys, or a keyspace a reader still follows."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from common.redis_client import redis_client
from common.redis_keys import ProjectionKeys
from common.settings import Settings
from projector import redis_prune
from tests.conftest import REDIS_URL, delete_redis_prefix
from tests.support.env import settings_for, unique_name

pytestmark = pytest.mark.integration


@pytest.fixture
async def setup() -> AsyncIterator[tuple[aioredis.Redis, Settings]]:
    """A prefix holding: orders spread over 3 keyspaces (the configuration in use), the
    products and customers projections (in use, not spread), layout 1's products (a key per
    document), a spread of customers over 2 no longer configured, and an audit record."""
    prefix = unique_name("redis")
    settings = settings_for(
        "unused", prefix, redis_spread=True, projector_segments="redis:orders=3"
    )
    client = redis_client(REDIS_URL, max_connections=4)
    for shard in range(3):
        keys = ProjectionKeys(prefix, "orders", (shard, 3))
        await client.set(keys.active, 1)
        await client.hset(keys.docs(1), f"order-{shard}", b"doc")
    for name in ("products", "customers"):
        keys = ProjectionKeys(prefix, name)
        await client.set(keys.active, 1)
        await client.hset(keys.docs(1), "x", b"doc")
    # Layout 1: no layout in the name, a key per document.
    await client.set(f"{prefix}:{{products}}:active", 1)
    await client.set(f"{prefix}:{{products}}:g1:doc:x", b"doc")
    await client.set(f"{prefix}:{{products}}:g1:checkpoint", "0")
    for shard in range(2):
        await client.set(ProjectionKeys(prefix, "customers", (shard, 2)).active, 1)
    await client.hset(f"{prefix}:audit:redis:orders", "checked", 5)
    try:
        yield client, settings
    finally:
        await client.aclose()
        await delete_redis_prefix(prefix)


async def _keys(client: aioredis.Redis, prefix: str) -> set[str]:
    return {k.decode() async for k in client.scan_iter(match=f"{prefix}:*", count=1000)}


async def test_lists_the_unused_keyspaces_then_deletes_only_them(
    setup: tuple[aioredis.Redis, Settings],
) -> None:
    client, settings = setup
    prefix = settings.redis_prefix
    before = await _keys(client, prefix)
    unused = {
        f"{prefix}:{{products}}",
        ProjectionKeys(prefix, "customers", (0, 2)).base,
        ProjectionKeys(prefix, "customers", (1, 2)).base,
    }

    out = io.StringIO()
    assert await redis_prune.prune(client, settings, delete=False, out=out) == 0
    assert {s.base for s in await redis_prune.unused(client, settings)} == unused
    assert f"{prefix}:{{products}}: 3 keys, unused" in out.getvalue()
    assert "run again with --delete" in out.getvalue()
    assert await _keys(client, prefix) == before  # listing deletes nothing

    out = io.StringIO()
    assert await redis_prune.prune(client, settings, delete=True, out=out) == 0
    assert f"{prefix}:{{products}}: 3 keys deleted" in out.getvalue()
    left = await _keys(client, prefix)
    assert not {k for k in left if any(k.startswith(base + ":") for base in unused)}
    # What is in use, and the audit's record, are untouched.
    assert left == {k for k in before if not any(k.startswith(base + ":") for base in unused)}
    assert f"{prefix}:audit:redis:orders" in left
    assert len([k for k in left if ":docs" in k]) == 5  # three order shards, two projections

    out = io.StringIO()
    assert await redis_prune.prune(client, settings, delete=True, out=out) == 0
    assert out.getvalue() == "no unused Redis keyspaces\n"


async def test_a_keyspace_a_reader_still_follows_is_kept(
    setup: tuple[aioredis.Redis, Settings],
) -> None:
    """A read server of the old configuration (here: customers spread over 2) still follows
    its shard's change channel: that shard is kept, the rest of the unused ones go."""
    client, settings = setup
    followed = ProjectionKeys(settings.redis_prefix, "customers", (1, 2))
    pubsub = client.pubsub()
    await pubsub.subscribe(followed.changes)
    try:
        confirmed = await pubsub.get_message(timeout=5)  # the server has registered it
        assert confirmed is not None and confirmed["type"] == "subscribe"
        out = io.StringIO()
        assert await redis_prune.prune(client, settings, delete=True, out=out) == 1
        assert f"{followed.base}: 1 keys, kept: 1 reader(s) still follow it" in out.getvalue()
        assert await client.exists(followed.active) == 1
        unfollowed = ProjectionKeys(settings.redis_prefix, "customers", (0, 2))
        assert await client.exists(unfollowed.active) == 0
    finally:
        await pubsub.aclose()
