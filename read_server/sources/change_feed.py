"""Keeps the near-cache shelves current from the projector's change messages.

One dedicated Redis connection subscribes to every projection's changes channel
(:mod:`common.changes`) and hands each message to its :class:`Shelf`. A shelf may
only serve while no change can go unheard, so the feed takes it off the moment
that is in doubt:

- the connection fails (Redis killed or restarted): every shelf is lost at once;
  the feed reconnects with back-off, and a shelf serves again once its channel's
  subscription is confirmed (empty: it refills from Redis);
- Redis is silent (frozen, partitioned): PINGs go out every ``PING_INTERVAL_S``;
  nothing heard for ``SILENCE_S`` counts as a failed connection;
- Redis was emptied (FLUSHDB): nothing is published, so the feed also reads each
  projection's active generation every ``CHECK_INTERVAL_S``; one that is gone or
  changed flushes its shelf.

The subscription's client never retries on its own (redis-py would reconnect and
resubscribe silently, and messages published in between would be missed).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from common.cancellation import raise_if_cancelled
from common.changes import BadChangeMessage, ChangeMessage
from common.positions import Position
from common.projection_checkpoints import RedisCheckpoints
from common.redis_client import node_url, redis_client
from common.redis_keys import ProjectionKeys
from read_server.sources.near_cache import Shelf

log = logging.getLogger(__name__)

PING_INTERVAL_S = 0.25
SILENCE_S = 1.0
CHECK_INTERVAL_S = 0.5
RETRY_FIRST_S = 0.05
RETRY_MAX_S = 1.0

# Told of each projection's new checkpoint after its shelf applied a message.
CheckpointListener = Callable[[str, Position], None]


class SubscriptionLost(ConnectionError):
    """The change feed can no longer vouch for what it has not heard."""


class ChangeFeed:
    """Subscribes for ``shelves`` (projection name -> shelf) until :meth:`close`.

    ``client`` is the process's shared pool (for the generation checks); the
    subscription gets its own connection to ``redis_url``.
    """

    def __init__(
        self,
        redis_url: str,
        client: aioredis.Redis,
        prefix: str,
        shelves: Mapping[str, Shelf],
    ) -> None:
        self._url = redis_url
        self._keys = {name: ProjectionKeys(prefix, name) for name in shelves}
        self._shelves = dict(shelves)
        self._by_channel = {keys.changes.encode(): shelves[n] for n, keys in self._keys.items()}
        self._checkpoints = RedisCheckpoints(client, prefix, tuple(shelves))
        self._listeners: list[CheckpointListener] = []
        self._task: asyncio.Task[None] | None = None
        self._confirmed = False  # the current connection's subscription was confirmed

    def listen(self, listener: CheckpointListener) -> None:
        """Call ``listener(projection, checkpoint)`` after every applied message."""
        self._listeners.append(listener)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="near-cache-feed")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task])  # not `await`: our own cancel must propagate
            self._task = None
        self._lose_all("closed")

    async def _run(self) -> None:
        retry_s = RETRY_FIRST_S
        while True:
            raise_if_cancelled()
            # One node of a cluster: a PUBLISH reaches every node's subscribers.
            subscriber = redis_client(node_url(self._url), max_connections=1, retries=0)
            self._confirmed = False
            try:
                # _listen in the body, not a second child: on 3.11 a child failing after
                # the body has ended leaves the task marked "cancelling" for good.
                async with asyncio.TaskGroup() as group:
                    group.create_task(self._check_generations())
                    await self._listen(subscriber)
            except* (RedisError, OSError, SubscriptionLost) as failed:
                log.warning("near-cache feed: %s; retrying", failed.exceptions[0])
            finally:
                self._lose_all("connection lost")
                await subscriber.aclose()
            # Back off only while Redis keeps refusing; a feed that worked retries at once.
            retry_s = RETRY_FIRST_S if self._confirmed else min(retry_s * 2, RETRY_MAX_S)
            await asyncio.sleep(retry_s)

    async def _listen(self, subscriber: aioredis.Redis) -> None:
        loop = asyncio.get_running_loop()
        async with subscriber.pubsub() as pubsub:
            await pubsub.subscribe(*self._by_channel)
            heard = pinged = loop.time()
            while True:
                raise_if_cancelled()
                message = await pubsub.get_message(timeout=PING_INTERVAL_S)
                now = loop.time()
                if message is not None:
                    heard = now
                    self._handle(message)
                elif now - heard > SILENCE_S:
                    raise SubscriptionLost(f"Redis silent for {now - heard:.1f}s")
                if now - pinged >= PING_INTERVAL_S:
                    await pubsub.ping()
                    pinged = now

    def _handle(self, message: dict[str, Any]) -> None:
        shelf = self._by_channel.get(message.get("channel") or b"")
        if shelf is None:
            return  # a PONG
        if message["type"] == "subscribe":
            # After the first, a confirmation means redis-py reconnected under us.
            shelf.subscribed()
            self._confirmed = True
            return
        if message["type"] != "message":
            return
        try:
            change = ChangeMessage.decode(message["data"])
        except BadChangeMessage as exc:
            log.error("near-cache %s: unreadable change message (%s)", shelf.projection, exc)
            shelf.flush("bad message")
            return
        shelf.apply(change)
        for listener in self._listeners:
            listener(shelf.projection, change.checkpoint)

    async def _check_generations(self) -> None:
        """Flush a shelf whose projection Redis no longer has (or has another of)."""
        while True:
            raise_if_cancelled()
            await asyncio.sleep(CHECK_INTERVAL_S)
            for name, shelf in self._shelves.items():
                keys = self._keys[name]
                found = await self._checkpoints.active(keys)
                if found is None or found[1] is None:
                    shelf.flush("redis emptied")
                elif shelf.generation is not None and found[0] != shelf.generation:
                    shelf.flush("switch")

    def _lose_all(self, reason: str) -> None:
        for shelf in self._shelves.values():
            if shelf.live:
                shelf.lost(reason)
