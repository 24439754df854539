"""Shared fixtures. Integration tests get a fresh, migrated database and a
private Redis key prefix; both are removed afterwards.

Migrations run once per session into a template database; each test's
database is a cheap ``CREATE DATABASE … TEMPLATE`` copy of it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
import pytest
import redis.asyncio as aioredis

from common.db import drop_database, migrate, split_database
from common.settings import Settings
from tests.support.env import REDIS_URL, settings_for, unique_name


@pytest.fixture(scope="session")
async def template_database() -> AsyncIterator[str]:
    """Name of a migrated database used as the template for every test database."""
    s = settings_for(unique_name("template"), "unused")
    await migrate(s.asyncpg_dsn, s.sqlalchemy_url)
    try:
        yield split_database(s.asyncpg_dsn)[1]
    finally:
        await drop_database(s.asyncpg_dsn)


@asynccontextmanager
async def fresh_settings(template_database: str, **overrides: object) -> AsyncIterator[Settings]:
    """Settings on a new migrated database (a copy of the template) and an unused Redis
    prefix; both are removed on exit."""
    s = settings_for(unique_name("db"), unique_name("redis"), **overrides)
    admin_dsn, name = split_database(s.asyncpg_dsn)
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_database}"')
    finally:
        await conn.close()
    try:
        yield s
    finally:
        await drop_database(s.asyncpg_dsn)
        await delete_redis_prefix(s.redis_prefix)


@pytest.fixture
async def settings(template_database: str) -> AsyncIterator[Settings]:
    """Settings pointing at a new migrated database and an unused Redis prefix."""
    async with fresh_settings(template_database) as s:
        yield s


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
