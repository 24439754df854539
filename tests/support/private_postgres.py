"""A PostgreSQL cluster of the tests' own (initdb in a scratch directory), the ``cqrs``
database migrated: for tests that stop it, or replicate it. The shared server is never
touched; without the server binaries the test is skipped with the reason."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from common.db import migrate
from common.settings import Settings
from cqrs.instances import Lookup, PrivatePostgres, find_postgres_bin, free_port


def started(scratch: Path, name: str = "postgres") -> PrivatePostgres:
    """Started and migrated; the caller stops it."""
    bin_dir = find_postgres_bin(Lookup())
    if bin_dir is None:
        pytest.skip("PostgreSQL server binaries are not installed: the test needs its own")
    server = PrivatePostgres(
        bin_dir, scratch / name, scratch / f"{name}.log", "127.0.0.1", free_port()
    )
    server.url = f"postgresql://postgres@127.0.0.1:{server.port}/cqrs"
    server.start()
    try:
        settings = Settings(database_url=server.url)
        asyncio.run(migrate(settings.asyncpg_dsn, settings.sqlalchemy_url))
    except BaseException:
        server.stop()
        raise
    return server
