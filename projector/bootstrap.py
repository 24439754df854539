"""Composition root of the projector: pools, the consumers, and what runs them.

Nothing is created at import time; one asyncpg pool and one Redis client per
process, shared by every consumer. To add a consumer of the event log, build it
in :func:`make_consumers`; the runner, leadership, rebuild, status and verify take
it from there.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import asyncpg
from redis.asyncio import Redis

from common.pool_metrics import PoolWatch, watch_pools
from common.redis_client import redis_client
from common.settings import Settings
from projector.analytics.consumer import AnalyticsConsumer
from projector.consumer import Consumer
from projector.failures import FailureLog
from projector.process import Projector, make_runner
from projector.projection import Projection
from projector.projections import BACKENDS, KINDS, PG, REDIS, ProjectionKind
from projector.runner import ConsumerRunner
from projector.stores.pg_store import PgProjectionStore
from projector.stores.port import ProjectionStore
from projector.stores.redis_store import RedisProjectionStore
from projector.wakeup import Wakeup


@dataclass
class App:
    """The projector's shared connections and consumers; :meth:`close` releases them."""

    settings: Settings
    pool: asyncpg.Pool
    redis: Redis
    failures: FailureLog
    consumers: list[Consumer]
    pools: PoolWatch | None = None

    def consumer(self, name: str) -> Consumer:
        """The consumer called ``name`` (e.g. ``redis:orders``)."""
        for consumer in self.consumers:
            if consumer.name == name:
                return consumer
        raise ValueError(f"unknown consumer {name!r}; expected one of {self.names()}")

    def names(self) -> list[str]:
        return [c.name for c in self.consumers]

    def select(self, families: Sequence[str] | None) -> list[Consumer]:
        """The consumers of the given families (``products`` ...; all if ``None``)."""
        if not families:
            return list(self.consumers)
        known = {c.name.partition(":")[2] for c in self.consumers}
        unknown = sorted(set(families) - known)
        if unknown:
            raise ValueError(f"unknown projections {unknown}; expected {sorted(known)}")
        return [c for c in self.consumers if c.name.partition(":")[2] in families]

    def projector(self, names: Sequence[str] | None = None) -> Projector:
        """The process's runners, for every consumer or only those named."""
        chosen = self.consumers if names is None else [self.consumer(n) for n in names]
        return Projector(self.settings, self.pool, self.failures, chosen)

    def runner(self, consumer: Consumer, wakeup: Wakeup) -> ConsumerRunner:
        return make_runner(self.settings, self.pool, self.failures, consumer, wakeup)

    async def close(self) -> None:
        if self.pools is not None:
            self.pools.close()
            self.pools = None
        await self.redis.aclose()
        await self.pool.close()


def make_store(
    settings: Settings, pool: asyncpg.Pool, redis: Redis, backend: str, kind: ProjectionKind
) -> ProjectionStore:
    """The live store of one projection."""
    if backend == REDIS:
        grace_s = settings.projector_switch_grace_ms / 1000
        return RedisProjectionStore(redis, settings.redis_prefix, kind, grace_s=grace_s)
    assert backend == PG
    return PgProjectionStore(pool, kind)


def make_consumers(settings: Settings, pool: asyncpg.Pool, redis: Redis) -> list[Consumer]:
    """Every consumer of the event log this process runs."""
    projections: list[Consumer] = [
        Projection(kind, make_store(settings, pool, redis, backend, kind))
        for backend in BACKENDS
        for kind in KINDS.values()
    ]
    return [*projections, AnalyticsConsumer(pool)]


async def bootstrap(settings: Settings) -> App:
    pool = await asyncpg.create_pool(
        settings.asyncpg_dsn,
        min_size=1,
        max_size=max(settings.db_pool_size, 2),
        server_settings=settings.pg_session_settings("cqrs-projector"),
    )
    redis = redis_client(settings.redis_url, max_connections=max(settings.db_pool_size, 8))
    pools = watch_pools(pg={"projector": pool}, redis={"projector": redis})
    return App(
        settings, pool, redis, FailureLog(pool), make_consumers(settings, pool, redis), pools
    )


@contextlib.asynccontextmanager
async def open_app(settings: Settings) -> AsyncIterator[App]:
    """:func:`bootstrap`, closed on exit."""
    app = await bootstrap(settings)
    try:
        yield app
    finally:
        await app.close()
