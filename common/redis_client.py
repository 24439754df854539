"""The Redis client every process uses: bounded waits, and no silent retry loops.

redis-py's default retries a failed command ten times with back-off, which would
hide an outage for seconds inside one call. One immediate retry is enough to
replace a pooled connection that a Redis restart broke; anything longer is an
outage the caller handles (UNAVAILABLE for readers, back-off for the projector).
"""

from __future__ import annotations

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

SOCKET_TIMEOUT_S = 2.0
POOL_WAIT_S = 2.0


def redis_client(url: str, max_connections: int, retries: int = 1) -> aioredis.Redis:
    """A client over a bounded pool that fails fast when Redis is down.

    Responses are not decoded: documents are bytes. Close it with ``aclose()``.
    ``retries=0`` for a connection whose loss the caller must see (a subscription).
    """
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=POOL_WAIT_S,
        socket_timeout=SOCKET_TIMEOUT_S,
        socket_connect_timeout=SOCKET_TIMEOUT_S,
        retry=Retry(NoBackoff(), retries),
    )
    return aioredis.Redis.from_pool(pool)  # the client owns (and closes) the pool
