"""The write-model contract against PostgreSQL: one transaction per command (the default)
and the group-committing unit of work (``CQRS_WRITE_BATCH_EXECUTORS=4``)."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

import asyncpg
import pytest

from common.settings import Settings
from tests.contract.write_model import WriteModelContract
from write_server.bootstrap import bootstrap


class TestPostgresWriteModel(WriteModelContract):
    executors = 0  # CQRS_WRITE_BATCH_EXECUTORS

    @pytest.fixture(autouse=True)
    async def _service(self, settings: Settings) -> AsyncIterator[None]:
        settings = dataclasses.replace(settings, write_batch_executors=self.executors)
        app = await bootstrap(settings)
        self.service = app.service
        self.conn = await asyncpg.connect(settings.asyncpg_dsn)
        try:
            yield
        finally:
            await self.conn.close()
            await app.close()

    async def events_of(self, aggregate_id: str) -> list[str]:
        rows = await self.conn.fetch(
            "SELECT event_type FROM events WHERE aggregate_id = $1 ORDER BY aggregate_version",
            aggregate_id,
        )
        return [r["event_type"] for r in rows]

    async def stock_of(self, product_id: str) -> int:
        stock: int = await self.conn.fetchval(
            "SELECT stock FROM products WHERE id = $1", product_id
        )
        return stock

    async def stored_replies(self) -> list[str]:
        rows = await self.conn.fetch(
            "SELECT subject, request_id, reply::text FROM command_requests"
        )
        return [" ".join(row) for row in rows]


class TestPostgresWriteModelGroupCommit(TestPostgresWriteModel):
    executors = 4


async def test_write_pool_sessions_kill_idle_transactions(settings: Settings) -> None:
    app = await bootstrap(settings)
    try:
        async with app.pool.acquire() as conn:
            idle = await conn.fetchval("SHOW idle_in_transaction_session_timeout")
            statement = await conn.fetchval("SHOW statement_timeout")
    finally:
        await app.close()
    assert idle == f"{settings.idle_in_transaction_timeout_ms // 1000}s"
    assert statement == f"{settings.statement_timeout_ms // 1000}s"
