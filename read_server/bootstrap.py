"""Composition root: one asyncpg pool and one Redis pool per process, and the sources over them."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import asyncpg
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from common.settings import Settings
from read_server.sources.base import SourceSet
from read_server.sources.pg_queries import PgReader
from read_server.sources.projection import ProjectionSource
from read_server.sources.read_model import ReadModelSource
from read_server.sources.write_model import WriteModelSource

# Bounds how long a request can hang on a dead or stuck backing store before
# it is answered UNAVAILABLE.
REDIS_SOCKET_TIMEOUT_S = 2.0
REDIS_POOL_WAIT_S = 2.0
PG_CONNECT_TIMEOUT_S = 5.0


@dataclass
class ReadResources:
    """What the read server holds open; :meth:`close` releases it (idempotent)."""

    pg_pool: asyncpg.Pool
    redis_pool: aioredis.ConnectionPool
    redis: aioredis.Redis
    sources: SourceSet
    _closed: bool = field(default=False, repr=False)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await asyncio.gather(self.pg_pool.close(), self.redis.aclose(), self.redis_pool.aclose())


def redis_pool(settings: Settings, max_connections: int) -> aioredis.ConnectionPool:
    """A bounded Redis pool that fails fast when Redis is down."""
    return aioredis.BlockingConnectionPool.from_url(
        settings.redis_url,
        max_connections=max_connections,
        timeout=REDIS_POOL_WAIT_S,
        socket_timeout=REDIS_SOCKET_TIMEOUT_S,
        socket_connect_timeout=REDIS_SOCKET_TIMEOUT_S,
        # One immediate retry survives a pooled connection broken by a Redis
        # restart; the library default (10 with backoff) would stall requests.
        retry=Retry(NoBackoff(), 1),
    )


async def open_pg_pool(settings: Settings) -> asyncpg.Pool:
    """The asyncpg pool both PostgreSQL sources share (read-only sessions)."""
    pool: asyncpg.Pool = await asyncpg.create_pool(
        settings.asyncpg_dsn,
        # No eager connection: the server starts (and Redis reads work) while
        # PostgreSQL is down.
        min_size=0,
        max_size=settings.db_pool_size,
        timeout=PG_CONNECT_TIMEOUT_S,
        command_timeout=settings.statement_timeout_ms / 1000,
        server_settings={
            **settings.pg_session_settings("cqrs-read-server"),
            "default_transaction_read_only": "on",
        },
    )
    return pool


async def open_resources(settings: Settings) -> ReadResources:
    """Open the pools and build the three sources over them."""
    pg_pool = await open_pg_pool(settings)
    # The event loop serves many requests per connection; a few more than the
    # PostgreSQL pool is plenty.
    pool = redis_pool(settings, max_connections=max(8, settings.db_pool_size * 2))
    client = aioredis.Redis(connection_pool=pool)
    reader = PgReader(pg_pool)
    sources = SourceSet(
        projection=ProjectionSource(client, settings.redis_prefix),
        read_model=ReadModelSource(reader),
        write_model=WriteModelSource(reader),
    )
    return ReadResources(pg_pool, pool, client, sources)
