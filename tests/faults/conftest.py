"""Fixtures of the fault-injection suite: private servers the tests may kill.

The shared PostgreSQL and Redis are never stopped, flushed or reconfigured: a test
that must kill or empty a service gets its own instance here, started from the
locally installed binaries (skipped with a clear message where there are none);
``scratch`` and ``private_redis`` live in ``tests/conftest.py`` (integration tests use
them too).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from common.db import migrate
from common.settings import Settings
from cqrs.instances import (
    Lookup,
    PrivatePostgres,
    find_postgres_bin,
    free_port,
)

pytestmark = pytest.mark.faults


@pytest.fixture
def private_postgres(scratch: Path) -> Iterator[PrivatePostgres]:
    """A PostgreSQL cluster of our own (initdb), with the ``cqrs`` database migrated."""
    bin_dir = find_postgres_bin(Lookup())
    if bin_dir is None:
        pytest.skip("PostgreSQL server binaries are not installed: the test needs its own")
    server = PrivatePostgres(
        bin_dir, scratch / "postgres", scratch / "postgres.log", "127.0.0.1", free_port()
    )
    server.url = f"postgresql://postgres@127.0.0.1:{server.port}/cqrs"
    server.start()
    try:
        settings = Settings(database_url=server.url)
        asyncio.run(migrate(settings.asyncpg_dsn, settings.sqlalchemy_url))
        yield server
    finally:
        server.stop()
