"""The bench's CPU shares (bench/process_cpu.py) read real processes: a PostgreSQL backend
found by its application name, a projector process found by its arguments."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
import uuid

import asyncpg
import pytest

from bench import process_cpu
from common.settings import Settings
from tests.support.events import eventually

pytestmark = pytest.mark.integration

_BURN = "SELECT count(*) FROM generate_series(1, 4000000)"


async def test_a_backend_is_found_by_its_application_name_and_its_cpu_counted(
    settings: Settings,
) -> None:
    name = f"cqrs-test-burn-{uuid.uuid4().hex[:8]}"
    burner = await asyncpg.connect(settings.asyncpg_dsn, server_settings={"application_name": name})
    idle = await asyncpg.connect(
        settings.asyncpg_dsn, server_settings={"application_name": f"other-{name}"}
    )
    try:
        backends = process_cpu.Backends(settings.asyncpg_dsn, (name,))
        before = await asyncio.to_thread(backends.snapshot)
        assert before is not None and list(before) == [burner.get_server_pid()]
        started = asyncio.get_running_loop().time()
        await burner.fetchval(_BURN)
        took = asyncio.get_running_loop().time() - started
        after = await asyncio.to_thread(backends.snapshot)
        assert after is not None
        # The backend was busy for the statement: its CPU is most of the wall time (a
        # tick is 10 ms), and the other backend's is not in it.
        assert process_cpu.spent(before, after) >= 0.5 * took - 0.02, (took, before, after)
    finally:
        await burner.close()
        await idle.close()


async def test_the_sessions_of_a_database_count_while_they_come_and_go(
    settings: Settings,
) -> None:
    # The projector bench's reading: every session of the run's database, one that ended
    # kept at its last reading, the measuring side's own left out.
    watcher = await asyncpg.connect(settings.asyncpg_dsn)
    own = await asyncpg.connect(settings.asyncpg_dsn)
    early = await asyncpg.connect(settings.asyncpg_dsn)
    try:
        await early.fetchval(_BURN)  # before the run: not the run's
        sessions = process_cpu.DatabaseSessions(watcher)
        sessions.ignore(own)
        await sessions.start()
        assert sessions.seconds() == 0.0
        burner = await asyncpg.connect(settings.asyncpg_dsn)
        started = time.monotonic()
        await burner.fetchval(_BURN)
        took = time.monotonic() - started
        await sessions.sample()
        pid = burner.get_server_pid()
        await burner.close()  # ended: its last reading stays

        async def ended() -> bool:
            query = "SELECT count(*) = 0 FROM pg_stat_activity WHERE pid = $1"
            return bool(await watcher.fetchval(query, pid))

        await eventually(ended, interval=0.01)
        await own.fetchval(_BURN)  # ignored
        await sessions.sample()
        counted = sessions.seconds()
        assert counted is not None and 0.5 * took - 0.02 <= counted <= took + 0.3, (took, counted)
    finally:
        for conn in (watcher, own, early):
            await conn.close()


def test_a_projector_process_is_found_by_its_arguments_and_its_cpu_read() -> None:
    burn = "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass"
    wait = f"{burn}\ntime.sleep(60)"
    projector = subprocess.Popen([sys.executable, "-c", wait, "cqrs", "projector", "run"])
    bystander = subprocess.Popen([sys.executable, "-c", wait, "cqrs", "read-server"])
    try:
        deadline = time.monotonic() + 20
        found = process_cpu.projector_processes()
        while found.get(projector.pid, 0.0) < 0.3 and time.monotonic() < deadline:
            time.sleep(0.05)
            found = process_cpu.projector_processes()
        assert found.get(projector.pid, 0.0) >= 0.3, found
        assert bystander.pid not in found and os.getpid() not in found
    finally:
        for process in (projector, bystander):
            process.kill()
            process.wait()


def test_a_postgresql_that_does_not_answer_is_not_measured() -> None:
    # A port nothing listens on: the snapshot says "not measured" instead of failing the scenario.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    backends = process_cpu.Backends(f"postgresql://postgres@127.0.0.1:{port}/x", ("pgbench",))
    assert backends.snapshot() is None
