"""Composition root of the read server: the pools, the three sources over them, and
the change feed (for the near-cache and the Watch streams)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import asyncpg
import redis.asyncio as aioredis

from common.connection_budget import pool_options, read_pool_max
from common.db import keep_session
from common.entities import ENTITIES
from common.pool_metrics import PoolWatch, watch_pools
from common.projection_checkpoints import spread_of
from common.redis_client import redis_client
from common.settings import Settings
from read_server.history.limits import HistoryLimits
from read_server.parked import ParkedDocuments
from read_server.reads import Reads
from read_server.sources.base import QuerySource, SourceSet
from read_server.sources.change_feed import ChangeFeed
from read_server.sources.head import LogHead
from read_server.sources.near_cache import Shelf
from read_server.sources.postgres import (
    READ_MODEL,
    READ_MODEL_CHECKPOINTS,
    WRITE_MODEL,
    PostgresSource,
)
from read_server.sources.projection import ProjectionSource, parts_of
from read_server.sources.replica import ReplicaCommits, ReplicaRouter, Routed, RoutedSource
from read_server.watch.gaps import Gaps
from read_server.watch.hub import WatchHub, WatchLimits
from read_server.watch.streams import Watching

PG_CONNECT_TIMEOUT_S = 5.0
CLOSE_TIMEOUT_S = 3.0


@dataclass
class App:
    """What the read server holds open; :meth:`close` releases it (idempotent)."""

    settings: Settings
    pg_pool: asyncpg.Pool
    redis: aioredis.Redis
    sources: SourceSet
    reads: Reads | Routed[Reads]
    change_feed: ChangeFeed | None = None
    pools: PoolWatch | None = None
    replica_pool: asyncpg.Pool | None = None
    router: ReplicaRouter | None = None
    watching: Watching | None = None
    parked: ParkedDocuments | None = None
    _closed: bool = field(default=False, repr=False)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.pools is not None:
            self.pools.close()
        if self.change_feed is not None:
            await self.change_feed.close()
        if self.parked is not None:
            await self.parked.close()
        if self.router is not None:
            await self.router.close()
        if isinstance(self.sources.projection, ProjectionSource):
            await self.sources.projection.aclose()
        pools = [self.pg_pool, *([self.replica_pool] if self.replica_pool else [])]
        await asyncio.gather(*(_close_pool(p) for p in pools), self.redis.aclose())


async def _close_pool(pool: asyncpg.Pool) -> None:
    """Close gracefully, but never hang a shutdown on connections still busy."""
    try:
        async with asyncio.timeout(CLOSE_TIMEOUT_S):
            await pool.close()
    except TimeoutError:
        pool.terminate()


async def open_pg_pool(settings: Settings, dsn: str | None = None) -> asyncpg.Pool:
    """The asyncpg pool both PostgreSQL sources share (read-only sessions), on the primary
    or on ``dsn`` (the read replica)."""
    pool: asyncpg.Pool = await asyncpg.create_pool(
        dsn or settings.asyncpg_dsn,
        # No eager connection: the server starts (and Redis reads work) while
        # PostgreSQL is down.
        min_size=0,
        max_size=read_pool_max(settings),
        timeout=PG_CONNECT_TIMEOUT_S,
        **pool_options(settings),
        command_timeout=settings.seconds.statement_timeout,
        server_settings={
            **settings.pg_session_settings("cqrs-read-server"),
            "default_transaction_read_only": "on",
        },
        # No session state is ever set on these connections: the default reset would cost a
        # round trip per call, PostgreSQL work as large as a get itself.
        reset=keep_session,
    )
    return pool


async def bootstrap(settings: Settings) -> App:
    """Open the pools and build the three sources over them."""
    pg_pool = await open_pg_pool(settings)
    # The event loop serves many requests per connection; a few more than the
    # PostgreSQL pool is plenty.
    client = redis_client(settings.redis_url, max_connections=max(8, settings.db_pool_size * 2))
    # A projection spread over shards has a shelf per shard (each follows its channel).
    parts = {
        p.name: p.keys
        for e in ENTITIES
        for p in parts_of(settings.redis_prefix, e.name, spread_of(settings)[e.name])
    }
    # The bytes and documents bounds are per process: each shelf gets an equal share.
    shelf_bytes = settings.near_cache_bytes // len(parts)
    shelf_documents = max(1, settings.near_cache_documents * len(ENTITIES) // len(parts))
    shelves = (
        {name: Shelf(name, shelf_documents, shelf_bytes) for name in parts}
        if settings.near_cache_documents > 0 and shelf_bytes > 0
        else {}
    )
    head = LogHead(pg_pool)
    projection = ProjectionSource(
        client, settings.redis_prefix, shelves, head.check, spread_of(settings)
    )
    watching = None
    if settings.watch_streams_max > 0:
        hub = WatchHub(projection, WatchLimits.from_settings(settings))
        watching = Watching(hub, projection, Gaps(pg_pool))
    feed = None
    if shelves or watching is not None:
        feed = ChangeFeed(settings.redis_url, client, settings.redis_prefix, parts, shelves)
        feed.listen(projection.heard)
        if watching is not None:
            feed.follow(watching.hub)
        feed.start()
    limits = HistoryLimits.from_settings(settings)
    read_model = PostgresSource(pg_pool, READ_MODEL, READ_MODEL_CHECKPOINTS, head.check)
    on_primary = Reads(pg_pool, read_model, limits)
    reads: Reads | Routed[Reads] = on_primary
    routed_model: QuerySource = read_model
    replica_pool, router = None, None
    if settings.read_replica_dsn:
        # The read models, search, history, analytics and the write model from the replica
        # while it keeps up; a token waited for there (checkpoints, or the transaction).
        replica_pool = await open_pg_pool(settings, settings.read_replica_dsn)
        router = ReplicaRouter(
            pg_pool, replica_pool, max_lag_s=settings.seconds.read_replica_max_lag
        )
        on_replica = PostgresSource(replica_pool, READ_MODEL, READ_MODEL_CHECKPOINTS, head.check)
        routed_model = RoutedSource(Routed(router, on_replica, read_model))
        reads = Routed(router, Reads(replica_pool, on_replica, limits), on_primary)
        await router.measure()
        router.start()
    write_model: QuerySource = PostgresSource(pg_pool, WRITE_MODEL)
    if replica_pool is not None and router is not None:
        commits = ReplicaCommits(replica_pool, head.check)
        on_replica_tables = PostgresSource(replica_pool, WRITE_MODEL, replayed=commits.wait)
        write_model = RoutedSource(Routed(router, on_replica_tables, write_model))
    sources = SourceSet(
        projection=projection,
        read_model=routed_model,
        write_model=write_model,
    )
    pg = {"read": pg_pool, **({"read-replica": replica_pool} if replica_pool else {})}
    pools = watch_pools(pg=pg, redis={"read": client})
    # Gets of a parked document answer FAILED_PRECONDITION (read_server.parked).
    parked = ParkedDocuments(pg_pool)
    parked.start()
    return App(
        settings,
        pg_pool,
        client,
        sources,
        reads,
        feed,
        pools,
        replica_pool,
        router,
        watching,
        parked,
    )
