"""The read server's near-cache against a real Redis and the projector's real store.

The projector's Redis store publishes each batch; the change feed drops what it names.
Redis is our own instance here, so it can be killed, frozen and emptied.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import pytest
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from common.entities import ENTITIES, PRODUCTS
from common.errors import Unavailable
from common.event_log import Executor
from common.pb.shop.v1 import shop_pb2
from common.positions import ORIGIN, Position
from common.redis_client import redis_client
from common.redis_keys import ProjectionKeys
from cqrs.instances import PrivateRedis
from projector.stores.port import ProjectionStore
from projector.stores.redis_store import RedisProjectionStore
from read_server.sources.base import Freshness, PageRequest
from read_server.sources.change_feed import CHECK_INTERVAL_S, SILENCE_S, ChangeFeed
from read_server.sources.near_cache import Shelf
from read_server.sources.projection import ProjectionSource
from tests.contract.projection_store import a_product, as_it_is, put
from tests.support.env import unique_name

pytestmark = pytest.mark.integration

NOW = Freshness()


@dataclass
class Cached:
    redis: aioredis.Redis
    store: RedisProjectionStore  # the projector's side
    source: ProjectionSource  # the read server's side
    shelf: Shelf  # products
    position: Position = ORIGIN

    async def commit(self, *products: object) -> Position:
        new = Position(self.position.xid + 1, self.position.seq + 1)
        await self.store.commit(self.position, new, put(*products))  # type: ignore[arg-type]
        self.position = new
        return new

    async def kept(self, product: shop_pb2.Product) -> None:
        """Once the batch is heard of (so no message races the fill), read ``product``
        onto the shelf."""
        await until(lambda: self.shelf.checkpoint == self.position, 2, "heard of the batch")
        assert await self.source.get(PRODUCTS, product.id, NOW) == product.SerializeToString()
        assert self.shelf.doc(product.id) == product.SerializeToString()

    def token(self, position: Position) -> Freshness:
        return Freshness(position, 2.0)


async def until(condition: Callable[[], bool], within: float, what: str) -> float:
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < within, f"not {what} within {within}s"
        await asyncio.sleep(0.01)
    return time.monotonic() - started


@pytest.fixture
async def cached(private_redis: PrivateRedis) -> AsyncIterator[Cached]:
    prefix = unique_name("near")
    client = redis_client(private_redis.url, max_connections=8)
    store = RedisProjectionStore(client, prefix, PRODUCTS, grace_s=0.05)
    await store.switch_to(await store.new_copy(), as_it_is)
    shelves = {e.name: Shelf(e.name, 1000) for e in ENTITIES}
    source = ProjectionSource(client, prefix, shelves)
    parts = {name: ProjectionKeys(prefix, name) for name in shelves}
    feed = ChangeFeed(private_redis.url, client, prefix, parts, shelves)
    feed.listen(source.heard)
    feed.start()
    try:
        shelf = shelves["products"]
        await until(lambda: shelf.live, 3, "subscribed")
        yield Cached(client, store, source, shelf, await store.checkpoint())
    finally:
        await feed.close()
        await client.aclose()


async def test_a_read_is_kept_and_served_without_redis_until_a_batch_changes_it(
    cached: Cached,
) -> None:
    book = a_product(1, version=1)
    await cached.commit(book)
    await cached.kept(book)
    # Behind the cache's back (no message): the shelf still answers what it kept.
    assert cached.store.generation is not None
    await cached.redis.hset(cached.store.keys.docs(cached.store.generation), book.id, b"tampered")
    assert await cached.source.get(PRODUCTS, book.id, NOW) == book.SerializeToString()
    # A batch that changes it drops it: the next read goes to Redis again.
    book2 = a_product(1, version=2)
    book2.id = book.id
    await cached.commit(book2)
    await until(lambda: cached.shelf.checkpoint == cached.position, 2, "heard of the batch")
    assert await cached.source.get(PRODUCTS, book.id, NOW) == book2.SerializeToString()


async def test_a_token_read_never_answers_older_than_its_token(cached: Cached) -> None:
    """Right after each commit, before its message is (necessarily) heard."""
    book = a_product(2, version=1)
    await cached.commit(book)
    for version in range(2, 60):
        assert await cached.source.get(PRODUCTS, book.id, NOW) is not None  # fills the shelf
        newer = a_product(2, version=version)
        newer.id = book.id
        position = await cached.commit(newer)
        doc = await cached.source.get(PRODUCTS, book.id, cached.token(position))
        assert doc == newer.SerializeToString(), version


async def test_a_cached_page_changes_with_its_index(cached: Cached) -> None:
    first = a_product(3, category="books")
    await cached.commit(first)
    page = PageRequest(10)
    position = cached.position
    listed = await cached.source.list(PRODUCTS, page, {"category": "books"}, cached.token(position))
    assert listed.items == [first.SerializeToString()]
    await cached.source.list(PRODUCTS, page, {"category": "books"}, NOW)  # from the shelf now
    second = a_product(4, category="books")
    position = await cached.commit(second)
    listed = await cached.source.list(PRODUCTS, page, {"category": "books"}, cached.token(position))
    assert sorted(listed.items) == sorted([first.SerializeToString(), second.SerializeToString()])


async def test_killed_redis_empties_the_shelf_and_reads_fail_until_it_is_back(
    cached: Cached, private_redis: PrivateRedis
) -> None:
    book = a_product(5)
    await cached.commit(book)
    await cached.kept(book)
    private_redis.kill()
    took = await until(lambda: not cached.shelf.live, 2, "lost")
    print(f"\nshelf lost {took:.3f}s after Redis was killed")
    assert len(cached.shelf) == 0
    with pytest.raises((RedisError, OSError)):
        await cached.source.get(PRODUCTS, book.id, NOW)
    await asyncio.to_thread(private_redis.start)  # empty: keeps nothing on disk
    await until(lambda: cached.shelf.live, 5, "subscribed again")
    with pytest.raises(Unavailable):  # the projection is gone with Redis' data
        await cached.source.get(PRODUCTS, book.id, NOW)


async def test_frozen_redis_takes_the_shelf_off_within_the_silence_limit(
    cached: Cached, private_redis: PrivateRedis
) -> None:
    book = a_product(6)
    await cached.commit(book)
    await cached.kept(book)
    assert private_redis.pid is not None
    os.kill(private_redis.pid, signal.SIGSTOP)
    try:
        took = await until(lambda: not cached.shelf.live, SILENCE_S + 1.5, "lost")
        print(f"\nshelf off {took:.3f}s after Redis froze")
        with pytest.raises((RedisError, OSError)):  # not the cached document
            await cached.source.get(PRODUCTS, book.id, NOW)
    finally:
        os.kill(private_redis.pid, signal.SIGCONT)
    await until(lambda: cached.shelf.live, 5, "subscribed again")
    assert await cached.source.get(PRODUCTS, book.id, NOW) == book.SerializeToString()


async def test_an_emptied_redis_flushes_the_shelf(cached: Cached) -> None:
    book = a_product(7)
    await cached.commit(book)
    await cached.kept(book)
    await cached.redis.flushdb()  # our own instance
    took = await until(lambda: len(cached.shelf) == 0, CHECK_INTERVAL_S + 1, "flushed")
    print(f"\nshelf flushed {took:.3f}s after FLUSHDB")
    with pytest.raises(Unavailable):
        await cached.source.get(PRODUCTS, book.id, NOW)


async def test_a_switched_generation_is_heard_with_its_checkpoint(cached: Cached) -> None:
    book = a_product(8)
    await cached.commit(book)
    await cached.kept(book)
    before = cached.shelf.generation

    async def as_live(copy: ProjectionStore, db: Executor | None) -> Position:
        await copy.commit(ORIGIN, cached.position, put(book))
        return cached.position

    await cached.store.switch_to(await cached.store.new_copy(), as_live)
    await until(lambda: cached.shelf.generation not in (None, before), 2, "switched")
    assert cached.shelf.checkpoint == cached.position
    assert len(cached.shelf) == 0
    assert await cached.source.get(PRODUCTS, book.id, NOW) == book.SerializeToString()
