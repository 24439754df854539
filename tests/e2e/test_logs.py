"""Structured logs of real processes with stderr piped: every line one JSON object with
the fields, Alembic's chatter gone at the default level, the access log at DEBUG only,
and a ``--workers`` supervisor whose whole output stays JSON lines."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from common.db import drop_database
from common.pb.shop.v1 import command_service_pb2 as pb
from common.pb.shop.v1 import command_service_pb2_grpc as pb_grpc
from common.settings import Settings
from tests.support.env import settings_for, unique_name
from tests.support.servers import ROOT, env_for, free_port, wait_serving
from tests.support.servers import Process as Started

pytestmark = pytest.mark.e2e

FIELDS = {"time", "level", "process", "pid", "logger", "message"}


def json_lines(text: str) -> list[dict[str, object]]:
    """Every line parsed; fails naming the first line that is not a JSON object."""
    entries = []
    for line in text.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            pytest.fail(f"not a JSON line: {line!r}\n--- whole output:\n{text}")
        assert isinstance(entry, dict), line
        assert set(entry) >= FIELDS, line
        entries.append(entry)
    return entries


def run_cqrs(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cqrs", *args],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


@pytest.fixture
def new_database() -> Iterator[Settings]:
    """Settings naming a database that does not exist yet (dropped afterwards)."""
    settings = settings_for(unique_name("logs"), unique_name("logs"))
    try:
        yield settings
    finally:
        asyncio.run(drop_database(settings.asyncpg_dsn))


def test_migrate_logs_json_lines_without_alembic_chatter(new_database: Settings) -> None:
    env = env_for(new_database)
    env.pop("CQRS_LOG_FORMAT", None)
    migrated = run_cqrs(env, "migrate")
    assert migrated.returncode == 0, migrated.stderr
    entries = json_lines(migrated.stderr)
    assert {e["process"] for e in entries} == {"migrate"}
    assert not [e for e in entries if str(e["logger"]).startswith("alembic")], migrated.stderr
    messages = [str(e["message"]) for e in entries]
    assert any(m.startswith("created database") for m in messages), messages
    assert any(m.startswith("schema upgraded from revision (none) to") for m in messages)
    assert "migrated" in migrated.stdout  # stdout keeps its plain answer

    # Asked for, Alembic's lines come back, as JSON lines too (so the filter is what hid them).
    again = run_cqrs({**env, "CQRS_LOG_LEVELS": "alembic=INFO"}, "migrate")
    assert again.returncode == 0, again.stderr
    chatter = [e for e in json_lines(again.stderr) if str(e["logger"]).startswith("alembic")]
    assert any("Context impl PostgresqlImpl" in str(e["message"]) for e in chatter), again.stderr
    assert "schema already at revision" in again.stderr


def test_text_when_asked(new_database: Settings) -> None:
    migrated = run_cqrs({**env_for(new_database), "CQRS_LOG_FORMAT": "text"}, "migrate")
    assert migrated.returncode == 0, migrated.stderr
    lines = migrated.stderr.splitlines()
    assert lines and not any(line.startswith("{") for line in lines), migrated.stderr
    assert any(" INFO common.db: schema upgraded" in line for line in lines), migrated.stderr


def start_piped(args: list[str], env: dict[str, str], tmp: Path, name: str) -> Started:
    """Like tests.support.servers.start, with stderr alone in the log (stdout apart)."""
    log = (tmp / f"{name}.err").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "cqrs", *args],
        env=env, cwd=ROOT, stdout=(tmp / f"{name}.out").open("wb"), stderr=log,
    )  # fmt: skip
    return Started(proc, tmp / f"{name}.err")


async def create_products(address: str) -> None:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.CommandServiceStub(channel)
        request = pb.CreateProductRequest(name="a", price_cents=1, currency="EUR", request_id="k1")
        await stub.CreateProduct(request, metadata=(("x-request-id", "trace-1"),), timeout=20)
        await stub.CreateProduct(request, timeout=20)  # a replay: same key, no header
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.CreateProduct(pb.CreateProductRequest(name=""), timeout=20)


@pytest.mark.parametrize("level", ["DEBUG", "INFO"])
def test_write_server_logs_calls_at_debug_only(
    settings: Settings, tmp_path: Path, level: str
) -> None:
    port = free_port()
    env = env_for(settings, CQRS_LOG_LEVEL=level, CQRS_WRITE_PORT=str(port))
    process = start_piped(["write-server"], env, tmp_path, "write")
    try:
        wait_serving(f"127.0.0.1:{port}", process)
        asyncio.run(create_products(f"127.0.0.1:{port}"))
    finally:
        assert process.stop() == 0, process.log()
    entries = json_lines(process.log())
    assert {e["process"] for e in entries} == {"write-server"}
    assert any("listening on" in str(e["message"]) for e in entries)
    assert any(str(e["message"]).startswith("shutting down") for e in entries)
    access = [e for e in entries if e["logger"] == "common.rpc.access"]
    if level == "INFO":
        assert access == []
        return
    create = [e for e in access if e["method"] == "/shop.v1.CommandService/CreateProduct"]
    assert [(e["code"], e.get("request_id")) for e in create] == [
        ("OK", "trace-1"),
        ("OK", "k1"),
        ("INVALID_ARGUMENT", None),
    ]
    assert all(isinstance(e["duration_ms"], float) and e["level"] == "DEBUG" for e in create)


def test_workers_supervisor_output_stays_json(settings: Settings, tmp_path: Path) -> None:
    port = free_port()
    env = env_for(settings, CQRS_WRITE_PORT=str(port))
    log = tmp_path / "workers.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cqrs", "write-server", "--workers", "2"],
            env=env, cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT,
        )  # fmt: skip
    process = Started(proc, log)
    try:
        wait_serving(f"127.0.0.1:{port}", process)
        deadline = time.monotonic() + 30
        # Both workers say they listen (each its own pid), the supervisor its workers.
        while log.read_text().count("listening on") < 2:
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
    finally:
        assert process.stop(signal.SIGTERM, timeout=30) == 0, log.read_text()
    entries = json_lines(log.read_text())
    listening = [e for e in entries if "listening on" in str(e["message"])]
    assert {e["process"] for e in listening} == {"write-server"}
    assert len({e["pid"] for e in listening}) == 2
    supervisor = [e for e in entries if e["logger"] == "cqrs.supervisor"]
    assert supervisor and supervisor[0]["pid"] == proc.pid, entries
