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
from common.projection_checkpoints import RedisCheckpoints, spread_of
from common.redis_client import redis_client
from common.settings import Settings
from write_server.adapters.group_commit import GroupCommit, GroupConfig
from write_server.adapters.postgres_uow import OrderNumbers, PostgresUnitOfWork, open_pool
from write_server.backlog import Backlog
from write_server.service_layer.ports import UnitOfWork
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
    group: GroupConfig | None = None,
) -> CommandService:
    """The service over ``pool``: commands grouped into shared transactions (``group``,
    :mod:`write_server.adapters.group_commit`) or one transaction each (``None``)."""
    numbers = OrderNumbers()
    factory: Callable[[], UnitOfWork]
    if group is not None:
        factory = GroupCommit(pool, numbers, group).unit_of_work
    else:

        def factory() -> UnitOfWork:
            return PostgresUnitOfWork(pool, numbers)

    return CommandService(
        factory,
        clock=clock,
        allow_private_webhooks=allow_private_webhooks,
        payments=payments,
    )


async def bootstrap(settings: Settings) -> App:
    """Open the pool (lazily connecting) and start counting the outbox backlog."""
    pool = await open_pool(settings)
    # One connection is plenty: the backlog reads three keys every few seconds.
    redis = redis_client(settings.redis_url, max_connections=1)
    checkpoints = RedisCheckpoints(redis, settings.redis_prefix, shards=spread_of(settings))
    backlog = Backlog(pool, checkpoints)
    pools = watch_pools(pg={"write": pool}, redis={"write": redis})
    backlog.start()
    group = (
        GroupConfig(settings.write_batch_max, settings.write_batch_executors)
        if settings.write_batch_executors > 0
        else None
    )
    service = command_service(
        pool,
        allow_private_webhooks=settings.webhooks_allow_private,
        payments=bool(settings.payments_url),
        group=group,
    )
    return App(settings, service, pool, redis, backlog, pools)
