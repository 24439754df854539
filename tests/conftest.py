"""Shared fixtures. Integration tests get a fresh, migrated database and a
private Redis key prefix; both are removed afterwards. A test that must kill, freeze
or empty Redis gets a ``private_redis`` server of its own.

Migrations run once per session into a template database; each test's
database is a cheap ``CREATE DATABASE … TEMPLATE`` copy of it.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import pytest

from common.db import drop_database, migrate, split_database
from common.redis_client import redis_client
from common.settings import Settings
from cqrs.instances import (
    Lookup,
    PrivateNats,
    PrivateRedis,
    find_nats_server,
    find_redis_server,
    free_port,
)
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
    client = redis_client(REDIS_URL, max_connections=4)
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


@pytest.fixture
def scratch() -> Iterator[Path]:
    """A directory other users can enter (PostgreSQL runs as ``postgres`` under root)."""
    path = Path(tempfile.mkdtemp(prefix="cqrs-faults-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def private_redis(scratch: Path) -> Iterator[PrivateRedis]:
    """A redis-server of our own that keeps nothing on disk, like the shared one."""
    executable = find_redis_server(Lookup())
    if executable is None:
        pytest.skip("redis-server is not installed: the Redis fault tests need their own")
    server = PrivateRedis(
        executable,
        scratch / "redis",
        scratch / "redis.log",
        "127.0.0.1",
        free_port(),
        persistent=False,
    )
    server.url = f"redis://127.0.0.1:{server.port}/0"
    server.start()
    try:
        yield server
    finally:
        server.stop()


# -- NATS for the relay's tests ----------------------------------------------------------------

_NATS_ENV = "CQRS_TEST_NATS_URL"
_private_nats: list[PrivateNats] = []


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def pytest_configure(config: pytest.Config) -> None:
    """The relay's tests use the NATS on 127.0.0.1:4222 (or ``CQRS_TEST_NATS_URL``). Where
    none answers, a private ``nats-server -js`` is started for the session, as ``cqrs up``
    starts PostgreSQL and Redis; with no nats-server installed either, the tests marked
    ``nats`` are skipped and say why. Runs before any test module reads the variable."""
    if os.environ.get(_NATS_ENV) or _answers("127.0.0.1", 4222):
        return
    executable = find_nats_server(Lookup())
    if executable is None:
        return
    scratch = Path(tempfile.mkdtemp(prefix="cqrs-test-nats-"))
    server = PrivateNats(executable, scratch / "jetstream", scratch / "nats.log")
    server.start()
    _private_nats.append(server)
    os.environ[_NATS_ENV] = server.url


def pytest_unconfigure(config: pytest.Config) -> None:
    for server in _private_nats:
        server.stop()
        shutil.rmtree(server.data_dir.parent, ignore_errors=True)
    _private_nats.clear()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get(_NATS_ENV) or _answers("127.0.0.1", 4222):
        return
    skip = pytest.mark.skip(reason="no NATS answers and nats-server is not installed")
    for item in items:
        if item.get_closest_marker("nats") is not None:
            item.add_marker(skip)
