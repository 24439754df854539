"""The Redis client every process uses: bounded waits, and no silent retry loops.

redis-py's default retries a failed command ten times with back-off, which would
hide an outage for seconds inside one call. One immediate retry is enough to
replace a pooled connection that a Redis restart broke; anything longer is an
outage the caller handles (UNAVAILABLE for readers, back-off for the projector).
"""

from __future__ import annotations

from typing import cast
from urllib.parse import urlsplit

import redis.asyncio as aioredis
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
        cluster = RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in cluster_nodes(url)],
            max_connections=max_connections,
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
