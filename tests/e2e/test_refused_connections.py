"""When PostgreSQL refuses connections (nobody listening, or "too many clients" for the role),
every ``cqrs`` command says so in one line and exits 1: no traceback."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator

import asyncpg
import pytest

from tests.support.env import ADMIN_DSN
from tests.support.servers import free_port

pytestmark = pytest.mark.e2e

COMMANDS = [
    ["migrate"],
    ["seed", "--products", "1", "--customers", "1"],
    ["projector", "status"],
    ["projector", "verify"],
    ["projector", "rebuild"],
    ["projector", "run"],
    ["events", "tail"],
]
ROLE = f"cqrs_no_connections_{os.getpid()}"


@pytest.fixture(scope="module")
def full_role() -> Iterator[str]:
    """A database URL whose role may open no connection at all: PostgreSQL answers as it
    does when every connection is taken ("too many connections", SQLSTATE 53300)."""

    async def run(statement: str) -> None:
        conn = await asyncpg.connect(ADMIN_DSN)
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    asyncio.run(run(f"DROP ROLE IF EXISTS {ROLE}"))
    asyncio.run(run(f"CREATE ROLE {ROLE} LOGIN CONNECTION LIMIT 0"))
    try:
        base = ADMIN_DSN.rsplit("/", 1)[0].split("://", 1)[1].split("@", 1)[1]
        yield f"postgresql://{ROLE}@{base}/postgres"
    finally:
        asyncio.run(run(f"DROP ROLE IF EXISTS {ROLE}"))


def _run(args: list[str], database_url: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "CQRS_DATABASE_URL": database_url,
        "CQRS_PROJECTOR_METRICS_PORT": "0",
        "CQRS_LOG_FORMAT": "json",
    }
    return subprocess.run(
        [sys.executable, "-m", "cqrs", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: " ".join(a[:2]))
def test_nobody_listening_is_one_line(args: list[str]) -> None:
    done = _run(args, f"postgresql://postgres@127.0.0.1:{free_port()}/shop")
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "PostgreSQL at postgresql://postgres@127.0.0.1:" in lines[0]
    assert "is unavailable" in lines[0] and "Traceback" not in done.stderr


@pytest.mark.parametrize("args", COMMANDS[2:5], ids=lambda a: " ".join(a[:2]))
def test_too_many_connections_is_one_line(args: list[str], full_role: str) -> None:
    done = _run(args, full_role)
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "too many connections" in lines[0] and "Traceback" not in done.stderr
