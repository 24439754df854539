"""Private PostgreSQL and Redis instances for `cqrs up`, started for real from the
installed binaries in a temporary directory, on free ports; skipped where not installed."""

from __future__ import annotations

import asyncio
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
import redis

from common.settings import Settings
from cqrs.instances import (
    Lookup,
    Probe,
    ensure_services,
    find_postgres_bin,
    find_redis_server,
    free_port,
    probe_postgres,
    probe_redis,
    url_host_port,
)
from tests.support.env import ADMIN_DSN, REDIS_URL

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        find_postgres_bin(Lookup()) is None or find_redis_server(Lookup()) is None,
        reason="needs initdb/pg_ctl and redis-server",
    ),
]


@pytest.fixture
def data_dir() -> Iterator[Path]:
    # Not tmp_path: that is private to its owner, and as root PostgreSQL runs as another user.
    root = Path(tempfile.mkdtemp(prefix="cqrs-up-test-"))
    root.chmod(0o755)
    try:
        yield root / ".data"
    finally:
        shutil.rmtree(root)


@pytest.fixture
def occupied_port() -> Iterator[int]:
    """A port held by something that accepts connections but never speaks."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


async def _server_version(dsn: str) -> str:
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        return str(await conn.fetchval("SHOW server_version"))
    finally:
        await conn.close()


def test_starts_reuses_and_stops_private_instances(data_dir: Path, occupied_port: int) -> None:
    redis_port = free_port()
    settings = Settings(
        # PostgreSQL's port is taken by a stranger: the instance must move to a free one.
        database_url=f"postgresql://postgres@127.0.0.1:{occupied_port}/postgres",
        redis_url=f"redis://127.0.0.1:{redis_port}/0",
    )
    for attempt in range(2):  # the second run reuses the cluster created by the first
        adjusted, instances = ensure_services(settings, data_dir, timeout=0.3)
        try:
            assert [i.name for i in instances] == ["PostgreSQL", "Redis"]
            pg_port = url_host_port(adjusted.database_url, 5432)[1]
            assert pg_port != occupied_port
            assert adjusted.redis_url == settings.redis_url  # its port was free
            assert asyncio.run(_server_version(adjusted.asyncpg_dsn))
            client = redis.Redis.from_url(adjusted.redis_url)
            try:
                assert client.ping()
            finally:
                client.close()
        finally:
            for instance in reversed(instances):
                instance.stop()
        assert probe_postgres("127.0.0.1", pg_port, 0.3) is Probe.CLOSED
        assert probe_redis("127.0.0.1", redis_port, 0.3) is Probe.CLOSED
        log = (data_dir / "postgres.log").read_text()
        assert log.count("Success. You can now start the database server") == 1, attempt
    assert (data_dir / "postgres" / "PG_VERSION").exists()
    assert (data_dir / "redis").is_dir()


def test_reachable_services_are_used_as_they_are(data_dir: Path) -> None:
    settings = Settings(database_url=ADMIN_DSN, redis_url=REDIS_URL)
    adjusted, instances = ensure_services(
        settings, data_dir, lookup=Lookup(path="", pg_bin_globs=())
    )
    assert instances == []
    assert adjusted == settings
    assert not data_dir.exists()
