"""Composition root of the write server: the pool, the unit of work, the service."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from common.settings import Settings
from write_server.adapters.postgres_uow import OrderNumbers, PostgresUnitOfWork, open_pool
from write_server.service_layer.service import CommandService, utc_now


@dataclass
class App:
    """What the write server holds open; :meth:`close` releases it."""

    settings: Settings
    service: CommandService
    pool: asyncpg.Pool

    async def close(self) -> None:
        await self.pool.close()


def command_service(pool: asyncpg.Pool, clock: Callable[[], datetime] = utc_now) -> CommandService:
    """The service over ``pool`` (one unit of work per command)."""
    numbers = OrderNumbers()
    return CommandService(lambda: PostgresUnitOfWork(pool, numbers), clock=clock)


async def bootstrap(settings: Settings) -> App:
    pool = await open_pool(settings)
    return App(settings, command_service(pool), pool)
