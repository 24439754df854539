"""The change feed over a projection spread over two shards (a real Redis, its pub/sub):
followers hear each batch with where its shard stood before it (``since``) and the lowest
checkpoint heard of both shards (``through``), unknown until both have been heard, and
forgotten when the subscription is in doubt."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest

from common.changes import ChangeMessage
from common.positions import Position
from common.redis_client import redis_client
from cqrs.instances import PrivateRedis
from read_server.sources.change_feed import ChangeFeed
from read_server.sources.projection import parts_of
from tests.support.env import unique_name

pytestmark = pytest.mark.integration


@dataclass
class Heard:
    """A change follower that records what it is told."""

    changes: list[tuple[str, Position, Position | None, Position | None]] = field(
        default_factory=list
    )
    doubts: list[str] = field(default_factory=list)

    def changed(
        self,
        projection: str,
        change: ChangeMessage,
        since: Position | None = None,
        through: Position | None = None,
    ) -> None:
        self.changes.append((projection, change.checkpoint, since, through))

    def following(self, projection: str) -> None:
        self.doubts.append(projection)


async def _until(condition: object, what: str) -> None:
    for _ in range(300):
        if callable(condition) and condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out: {what}")


async def test_followers_hear_the_lowest_checkpoint_of_the_shards(
    private_redis: PrivateRedis,
) -> None:
    prefix = unique_name("through")
    client = redis_client(private_redis.url, max_connections=4)
    parts = {p.name: p.keys for p in parts_of(prefix, "orders", 2)}
    heard = Heard()
    feed = ChangeFeed(private_redis.url, client, prefix, parts, {})
    feed.follow(heard)
    feed.start()
    channels = [keys.changes for keys in parts.values()]

    async def publish(shard: int, seq: int) -> None:
        message = ChangeMessage(1, Position(10, seq), frozenset({"x"}), frozenset())
        await client.publish(channels[shard], message.encode())
        count = len(heard.changes)
        await _until(lambda: len(heard.changes) > count, f"shard {shard} at {seq}")

    try:
        await _until(lambda: heard.doubts.count("orders") >= 2, "both shards subscribed")
        await publish(0, 2)
        await publish(1, 1)
        await publish(0, 4)
        await publish(1, 5)
        assert heard.changes == [
            ("orders", Position(10, 2), None, None),  # shard 1 not heard yet
            ("orders", Position(10, 1), None, Position(10, 1)),
            ("orders", Position(10, 4), Position(10, 2), Position(10, 1)),
            ("orders", Position(10, 5), Position(10, 1), Position(10, 4)),
        ]
        # The connection lost (the server drops every client): heard nothing since.
        await client.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
        before = heard.doubts.count("orders")
        await _until(lambda: heard.doubts.count("orders") >= before + 2, "resubscribed")
        await publish(0, 6)
        assert heard.changes[-1] == ("orders", Position(10, 6), None, None)
    finally:
        await feed.close()
        await client.aclose()
