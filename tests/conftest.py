"""Shared fixtures. Integration tests get a fresh, migrated database and a
private Redis key prefix; both are removed afterwards."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from common.db import drop_database, migrate
from common.settings import Settings
from tests.support.env import REDIS_URL, settings_for, unique_name


@pytest.fixture
async def settings() -> AsyncIterator[Settings]:
    """Settings pointing at a new migrated database and an unused Redis prefix."""
    s = settings_for(unique_name("db"), unique_name("redis"))
    await migrate(s.asyncpg_dsn, s.sqlalchemy_url)
    try:
        yield s
    finally:
        await drop_database(s.asyncpg_dsn)
        await delete_redis_prefix(s.redis_prefix)


async def delete_redis_prefix(prefix: str) -> None:
    client = aioredis.from_url(REDIS_URL)
    try:
        batch: list[bytes] = []
        async for key in client.scan_iter(match=f"{prefix}:*", count=1000):
            batch.append(key)
            if len(batch) >= 500:
                await client.unlink(*batch)
                batch.clear()
        if batch:
            await client.unlink(*batch)
    finally:
        await client.aclose()
