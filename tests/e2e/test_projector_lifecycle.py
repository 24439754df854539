"""SIGTERM on a real projector process in the middle of a catch-up, with a standby.

The projector catches up a backlog (a seeded shop, thousands of events, in small
batches) when it gets SIGTERM. It must commit the batches it is applying, release its
leases and exit 0 within the grace period; the standby (another process) must take
every lease at once, not after the lease timeout (a minute here), and go on from the
committed checkpoints: no event lost or applied twice (``cqrs projector verify`` finds
the read models equal to the write model, including the analytics sums, which an event
applied twice would double). ``/healthz`` and ``cqrs probe projector`` are checked on
the same processes.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from common.settings import Settings
from tests.support.projector_health import every, healthz, until
from tests.support.servers import ROOT, Process, env_for, free_port, start

pytestmark = pytest.mark.e2e

LEASE_TIMEOUT_S = 60
GRACE_S = 10


def cqrs(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cqrs", *args],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=180,
    )  # fmt: skip


def test_sigterm_during_catch_up_hands_over_at_once(settings: Settings, tmp_path: Path) -> None:
    env = env_for(
        settings,
        CQRS_PROJECTOR_BATCH_SIZE="20",  # many batches: the catch-up takes seconds
        CQRS_PROJECTOR_LEASE_TIMEOUT_MS=str(LEASE_TIMEOUT_S * 1000),
        CQRS_SHUTDOWN_GRACE_MS=str(GRACE_S * 1000),
        # Active/passive: the second process is a hot standby of every consumer (with a
        # fair share it would lead half of them; test_projector_scale_out covers that).
        CQRS_PROJECTOR_FAIR_SHARE="false",
    )
    ports = {"first": free_port(), "standby": free_port()}

    def projector(name: str) -> Process:
        own = {**env, "CQRS_PROJECTOR_METRICS_PORT": str(ports[name])}
        return start(["projector", "run"], own, tmp_path / f"{name}.log")

    first = projector("first")
    standby: Process | None = None
    try:
        until("leading", lambda: every(ports["first"], "leader", "following"), 60, first.log)
        standby = projector("standby")
        until("standing by", lambda: every(ports["standby"], "standby"), 60, standby.log)

        seeded = cqrs(
            env, "seed", "--products", "3000", "--customers", "300", "--orders-per-customer", "3"
        )
        assert seeded.returncode == 0, seeded.stderr

        def behind() -> bool:
            _, body = healthz(ports["first"])
            return any((c["lag_events"] or 0) > 0 for c in body.get("consumers", {}).values())

        until("catching up", behind, 30, first.log)
        _, at_signal = healthz(ports["first"])
        first.proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        code = first.proc.wait(GRACE_S + 5)
        exited = time.monotonic()
        assert code == 0, first.log()
        assert exited - signalled < GRACE_S, first.log()

        # The standby leads every consumer at once: a poll interval, not the lease timeout.
        took = until("taken over", lambda: every(ports["standby"], "leader"), 30, standby.log)
        assert took < 10, took

        def caught_up() -> bool:
            status, body = healthz(ports["standby"])
            consumers = body.get("consumers", {}).values()
            return status == 200 and all(
                c["state"] == "following" and c["lag_events"] == 0 for c in consumers
            )

        until("caught up", caught_up, 120, standby.log)
        verified = cqrs(env, "projector", "verify")
        assert verified.returncode == 0, verified.stdout + verified.stderr
        status = cqrs(env, "projector", "status")
        assert status.returncode == 0, status.stdout + status.stderr  # nothing stopped

        probe = cqrs(env, "probe", "projector", "--address", f"127.0.0.1:{ports['standby']}")
        assert probe.returncode == 0, probe.stdout + probe.stderr
        assert probe.stdout.startswith("projector: http://") and " 200 " in probe.stdout
        gone = cqrs(
            {**env, "CQRS_PROJECTOR_METRICS_PORT": str(ports["first"])}, "probe", "projector"
        )
        assert gone.returncode == 1 and "unreachable" in gone.stdout, gone.stdout
    finally:
        codes = [p.stop() for p in (first, standby) if p is not None]
    assert codes == [0] * len(codes), (standby.log() if standby else "")[-3000:]

    log = first.log()
    # It was mid catch-up, it let its batches finish rather than being cancelled.
    assert any((c["lag_events"] or 0) > 0 for c in at_signal["consumers"].values()), at_signal
    assert "stopping: current batches finish" in log and "stopped; every lease released" in log
    assert "cancelling" not in log and '"level": "ERROR"' not in log, log[-3000:]
    assert "taking over" not in standby.log()  # no frozen-leader takeover was needed
