"""Composition root of the write server: the pool, the unit of work, the service."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from common.settings import Settings
from write_server.adapters.sqlalchemy_uow import SqlAlchemyUnitOfWork
from write_server.service_layer.service import CommandService


@dataclass
class App:
    """What the write server holds open; :meth:`close` releases it."""

    settings: Settings
    service: CommandService
    engine: AsyncEngine

    async def close(self) -> None:
        await self.engine.dispose()


def create_engine(settings: Settings) -> AsyncEngine:
    """The write pool. Idle-in-transaction sessions are killed: an open transaction
    would hold back the projector's safe horizon (pg_snapshot_xmin)."""
    return create_async_engine(
        settings.sqlalchemy_url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_pool_size,
        pool_timeout=5,
        connect_args={
            "timeout": 5,
            "server_settings": settings.pg_session_settings("cqrs-write-server"),
        },
    )


async def bootstrap(settings: Settings) -> App:
    engine = create_engine(settings)
    return App(settings, CommandService(lambda: SqlAlchemyUnitOfWork(engine)), engine)
