"""Composition root of the write server: the pool, the unit of work, the service, and
the outbox backlog it reports (its only use of Redis: projection checkpoints)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import asyncpg
from redis.asyncio import Redis

from common.pool_metrics import PoolWatch, watch_pools
from common.projection_checkpoints import RedisCheckpoints
from common.redis_client import redis_client
from common.settings import Settings
from write_server.adapters.postgres_uow import OrderNumbers, PostgresUnitOfWork, open_pool
from write_server.backlog import Backlog
from write_server.service_layer.service import CommandService, utc_now


@dataclass
class App:
    """What the write server holds open; :meth:`close` releases it (idempotent)."""

    settings: Settings
    service: CommandService
    pool: asyncpg.Pool
    redis: Redis
    backlog: Backlog
    pools: PoolWatch
    _closed: bool = field(default=False, repr=False)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self.backlog.close()
        self.pools.close()
        await asyncio.gather(self.pool.close(), self.redis.aclose())


def command_service(
    pool: asyncpg.Pool,
    clock: Callable[[], datetime] = utc_now,
    *,
    allow_private_webhooks: bool = False,
    payments: bool = False,
) -> CommandService:
    """The service over ``pool`` (one unit of work per command)."""
    numbers = OrderNumbers()
    return CommandService(
        lambda: PostgresUnitOfWork(pool, numbers),
        clock=clock,
        allow_private_webhooks=allow_private_webhooks,
        payments=payments,
    )


async def bootstrap(settings: Settings) -> App:
    """Open the pool (lazily connecting) and start counting the outbox backlog."""
    pool = await open_pool(settings)
    # One connection is plenty: the backlog reads three keys every few seconds.
    redis = redis_client(settings.redis_url, max_connections=1)
    backlog = Backlog(pool, RedisCheckpoints(redis, settings.redis_prefix))
    pools = watch_pools(pg={"write": pool}, redis={"write": redis})
    backlog.start()
    service = command_service(
        pool,
        allow_private_webhooks=settings.webhooks_allow_private,
        payments=bool(settings.payments_url),
    )
    return App(settings, service, pool, redis, backlog, pools)
