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
from typing import Any, Protocol

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from common.cancellation import raise_if_cancelled
from common.changes import BadChangeMessage, ChangeMessage
from common.positions import Position
from common.projection_checkpoints import RedisCheckpoints, segment_parts
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


class ChangeFollower(Protocol):
    """Told of every change message (the Watch streams, :mod:`read_server.watch`)."""

    def changed(
        self,
        projection: str,
        change: ChangeMessage,
        since: Position | None = None,
        through: Position | None = None,
    ) -> None:
        """A batch (or a switch) of ``projection`` committed. ``since``: where the part
        that published it stood before it (its previous message; every change in this batch
        is after it); ``through``: the lowest checkpoint heard of the projection's parts
        (one, or each shard of a spread one), so every change at or below it has been heard.
        ``None``: not known (a part not heard since its subscription was confirmed)."""

    def following(self, projection: str) -> None:
        """From now on every change of ``projection`` is heard, and changes before may have
        gone unheard (a subscription confirmed, after a lost connection too; a switch or an
        emptied Redis found by the check)."""


class ChangeFeed:
    """Subscribes to the changes of the projections' ``parts`` (name -> keys: a
    projection's own keyspace, ``orders``, or each shard of a spread one, ``orders#1/3``)
    until :meth:`close`, for their ``shelves`` (part name -> shelf; none when the
    near-cache is off) and the followers (told the projection's name).

    ``client`` is the process's shared pool (for the generation checks); the
    subscription gets its own connection to ``redis_url``.
    """

    def __init__(
        self,
        redis_url: str,
        client: aioredis.Redis,
        prefix: str,
        parts: Mapping[str, ProjectionKeys],
        shelves: Mapping[str, Shelf],
    ) -> None:
        self._url = redis_url
        self._keys = dict(parts)
        self._shelves = dict(shelves)
        self._by_channel = {keys.changes.encode(): n for n, keys in self._keys.items()}
        self._checkpoints = RedisCheckpoints(client, prefix, ())
        self._listeners: list[CheckpointListener] = []
        self._followers: list[ChangeFollower] = []
        self._generations: dict[str, int | None] = {}  # active, as last polled
        # Each part's checkpoint as last heard since its subscription was confirmed.
        self._heard: dict[str, Position] = {}
        self._parts_of: dict[str, list[str]] = {}
        for name in self._keys:
            self._parts_of.setdefault(segment_parts(name)[0], []).append(name)
        self._task: asyncio.Task[None] | None = None
        self._confirmed = False  # the current connection's subscription was confirmed

    def listen(self, listener: CheckpointListener) -> None:
        """Call ``listener(projection, checkpoint)`` after every applied message."""
        self._listeners.append(listener)

    def follow(self, follower: ChangeFollower) -> None:
        """Tell ``follower`` of every message, and of every doubt."""
        self._followers.append(follower)

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
        projection = self._by_channel.get(message.get("channel") or b"")
        if projection is None:
            return  # a PONG
        shelf = self._shelves.get(projection)
        if message["type"] == "subscribe":
            # After the first, a confirmation means redis-py reconnected under us.
            if shelf is not None:
                shelf.subscribed()
            self._tell_following(projection)
            self._confirmed = True
            return
        if message["type"] != "message":
            return
        try:
            change = ChangeMessage.decode(message["data"])
        except BadChangeMessage as exc:
            log.error("change feed %s: unreadable change message (%s)", projection, exc)
            self._doubt(projection, "bad message")
            return
        if shelf is not None:
            shelf.apply(change)
        whole = segment_parts(projection)[0]
        since = self._heard.get(projection)
        self._heard[projection] = change.checkpoint
        through = self._through(whole)
        for follower in self._followers:
            follower.changed(whole, change, since, through)
        if change.switch:
            # The rebuilt copy holds changes no message named: they went unheard.
            self._tell_following(projection)
        for listener in self._listeners:
            listener(projection, change.checkpoint)

    async def _check_generations(self) -> None:
        """Flush a shelf whose projection Redis no longer has (or has another of)."""
        while True:
            raise_if_cancelled()
            await asyncio.sleep(CHECK_INTERVAL_S)
            for name, keys in self._keys.items():
                found = await self._checkpoints.active(keys)
                now = found[0] if found is not None and found[1] is not None else None
                shelf = self._shelves.get(name)
                if shelf is not None:
                    if now is None:
                        shelf.flush("redis emptied")
                    elif shelf.generation is not None and now != shelf.generation:
                        shelf.flush("switch")
                # Followers are told of each change of the active generation (once).
                if name in self._generations and self._generations[name] != now:
                    self._tell_following(name)
                self._generations[name] = now

    def _through(self, whole: str) -> Position | None:
        """The lowest checkpoint heard of ``whole``'s parts (``None``: one not heard)."""
        heard = [self._heard.get(part) for part in self._parts_of[whole]]
        return None if None in heard else min(p for p in heard if p is not None)

    def _doubt(self, projection: str, reason: str) -> None:
        """Something of ``projection`` may have changed unheard: its shelf is flushed and
        the followers are told (they read again)."""
        shelf = self._shelves.get(projection)
        if shelf is not None:
            shelf.flush(reason)
        self._tell_following(projection)

    def _tell_following(self, part: str) -> None:
        self._heard.pop(part, None)  # changes may have gone unheard: not heard through
        for follower in self._followers:
            follower.following(segment_parts(part)[0])

    def _lose_all(self, reason: str) -> None:
        self._heard.clear()
        for shelf in self._shelves.values():
            if shelf.live:
                shelf.lost(reason)
