"""`cqrs projector run|rebuild|verify|status` as processes (exit codes, SIGTERM)."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

import pytest

from common.positions import ORIGIN, Position
from common.settings import Settings
from projector.bootstrap import App
from projector.errors import StoreLost
from tests.support.events import Shop, eventually
from tests.support.projector import some_history
from tests.support.servers import env_for

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def environment(settings: Settings) -> dict[str, str]:
    return env_for(settings, CQRS_PROJECTOR_POLL_INTERVAL_MS="100", CQRS_LOG_LEVEL="WARNING")


async def cqrs(settings: Settings, *args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "cqrs",
        "projector",
        *args,
        cwd=ROOT,
        env=environment(settings),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def test_rebuild_verify_status_commands(app: App) -> None:
    await some_history(Shop(app.pool), size=2)
    code, out = await cqrs(app.settings, "status")
    assert code == 0, out
    assert "not built yet" in out
    code, out = await cqrs(app.settings, "verify")
    assert code == 1 and "missing" in out  # 1 whatever the count (it used to be the count)
    code, out = await cqrs(app.settings, "rebuild")
    assert code == 0, out
    assert "rebuild pg:orders [" in out
    code, out = await cqrs(app.settings, "verify")
    assert code == 0, out
    assert "all projections match" in out
    code, out = await cqrs(app.settings, "rebuild", "--only", "analytics")  # make rebuild-analytics
    assert code == 0, out
    assert "rebuild pg:analytics [" in out and "-> schema analytics live" in out
    assert "pg:orders" not in out


async def test_status_shows_consumers_configured_elsewhere(app: App) -> None:
    """From a shell without CQRS_PAYMENTS_URL or CQRS_NATS_URL, the payments and the relay
    a projector elsewhere runs still show, at their checkpoints (and rebuild copies and
    segments' rows do not)."""
    assert not app.settings.payments_url and not app.settings.nats_url
    rows = [("payments:process", 7, 3), ("nats:events", 9, 1), ("pg:orders__rebuild", 1, 1)]
    await app.pool.executemany(
        "INSERT INTO read.projection_checkpoints (projection, xid, seq) VALUES ($1, $2, $3)", rows
    )
    code, out = await cqrs(app.settings, "status")
    assert code == 0, out
    lines = {line.split()[0]: line for line in out.splitlines()[1:]}
    for name, xid, seq in rows[:2]:
        assert Position(xid, seq).to_checkpoint() in lines[name], out
        assert "not configured in this shell" in lines[name], out
    assert "pg:orders__rebuild" not in lines and "pg:orders" in lines


async def test_sigterm_stops_the_projector_gracefully(app: App) -> None:
    await Shop(app.pool).create_customer()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "cqrs",
        "projector",
        "run",
        cwd=ROOT,
        env=environment(app.settings),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        consumer = app.consumer("redis:customers")

        async def applied() -> bool:
            try:
                return await consumer.checkpoint() > ORIGIN
            except StoreLost:
                return False

        await eventually(applied, within=30)
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), 15)
        assert proc.returncode == 0, err.decode()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
