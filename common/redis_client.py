"""The Redis client every process uses: bounded waits, and no silent retry loops.

redis-py's default retries a failed command ten times with back-off, which would
hide an outage for seconds inside one call. One immediate retry is enough to
replace a pooled connection that a Redis restart broke; anything longer is an
outage the caller handles (UNAVAILABLE for readers, back-off for the projector).
"""

from __future__ import annotations

import asyncio
from contextvars import ContextVar
from typing import Any, cast
from urllib.parse import urlsplit

import redis.asyncio as aioredis
import redis.exceptions
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

SOCKET_TIMEOUT_S = 2.0
POOL_WAIT_S = 2.0
# ``redis+cluster://host:port[,host:port...]``: a Redis Cluster, found from these nodes.
CLUSTER_SCHEME = "redis+cluster"


def is_cluster(url: str) -> bool:
    return urlsplit(url).scheme == CLUSTER_SCHEME


def cluster_nodes(url: str) -> list[tuple[str, int]]:
    """The seed nodes of a ``redis+cluster://`` URL."""
    netloc = urlsplit(url).netloc.rpartition("@")[2]
    nodes = []
    for node in netloc.split(","):
        host, _, port = node.rpartition(":")
        nodes.append((host or "127.0.0.1", int(port or 6379)))
    return nodes


def node_url(url: str) -> str:
    """A plain ``redis://`` URL of one node: a cluster's first seed node (pub/sub reaches
    every node of a cluster), or ``url`` itself."""
    if not is_cluster(url):
        return url
    host, port = cluster_nodes(url)[0]
    return f"redis://{host}:{port}/0"


def redis_client(url: str, max_connections: int, retries: int = 1) -> aioredis.Redis:
    """A client over a bounded pool that fails fast when Redis is down.

    Responses are not decoded: documents are bytes. Close it with ``aclose()``.
    ``retries=0`` for a connection whose loss the caller must see (a subscription).
    A ``redis+cluster://`` URL gives a Redis Cluster client, used through the same calls:
    every script's keys share a projection's hash tag (:mod:`common.redis_keys`).
    """
    if is_cluster(url):
        cluster = _WaitingCluster(
            max_connections,
            startup_nodes=[ClusterNode(host, port) for host, port in cluster_nodes(url)],
            # Commands are bounded by the client's semaphore; the other half is for the
            # pipelines, which hold a connection on every node they touch.
            max_connections=2 * max_connections,
            socket_timeout=SOCKET_TIMEOUT_S,
            socket_connect_timeout=SOCKET_TIMEOUT_S,
            retry=Retry(NoBackoff(), retries),
        )
        # The calls the code makes (commands, scripts with keys, pipelines without
        # MULTI, SCAN) are RedisCluster's too: one client type for the callers.
        return cast(aioredis.Redis, cluster)
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=POOL_WAIT_S,
        socket_timeout=SOCKET_TIMEOUT_S,
        socket_connect_timeout=SOCKET_TIMEOUT_S,
        retry=Retry(NoBackoff(), retries),
    )
    return aioredis.Redis.from_pool(pool)  # the client owns (and closes) the pool


class _WaitingCluster(RedisCluster):
    """A RedisCluster whose callers wait for a connection, as the single-node client's
    ``BlockingConnectionPool`` makes them (up to :data:`POOL_WAIT_S`, then a
    ``ConnectionError``: an outage).

    redis-py's cluster pools never wait: a call finding its node's pool in use fails at once
    with ``MaxConnectionsError``. Commands here take a slot of a semaphore first, so no more
    of them are in flight than one node's pool holds."""

    def __init__(self, concurrency: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._in_flight = asyncio.Semaphore(concurrency)

    def pipeline(self, transaction: Any | None = None, shard_hint: Any | None = None) -> Any:
        """Pipelines without MULTI only. redis-py's cluster pipeline queues each command of a
        transaction by running a coroutine on a private loop in a thread and joining it, so
        the process's event loop stops meanwhile; a projector was seen hung for good there
        (its leases lost, SIGTERM unanswered). Atomic steps are Lua scripts here instead."""
        if transaction:
            raise redis.exceptions.RedisClusterException(
                "MULTI pipelines block the event loop on a cluster client; use a script"
            )
        return super().pipeline(transaction=False, shard_hint=shard_hint)

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        if _holding.get():  # redis-py resending part of a command of ours: its slot is ours
            return await super().execute_command(*args, **kwargs)
        try:
            async with asyncio.timeout(POOL_WAIT_S):
                await self._in_flight.acquire()
        except TimeoutError:
            raise redis.exceptions.ConnectionError(
                f"no Redis connection free within {POOL_WAIT_S:g} s"
            ) from None
        token = _holding.set(True)
        try:
            return await super().execute_command(*args, **kwargs)
        finally:
            _holding.reset(token)
            self._in_flight.release()


# Set while a task runs a command of _WaitingCluster's: redis-py may call execute_command
# again inside it (a multi-slot command's failed part), which must not wait for a slot.
_holding: ContextVar[bool] = ContextVar("redis_cluster_slot_held", default=False)
