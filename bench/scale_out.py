"""Scale-out: the same projection read against a read server with ``--workers 1`` and
with ``--workers 2`` (SO_REUSEPORT), side by side in one run.

Each server is started here on a free port, on the system's database and Redis, so
the running system is not disturbed; both use the same scenario and load settings.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import processes, summary
from bench.catalogue import ROOT, RPC_SCENARIOS
from bench.rpc import Run, run_scenario
from common.settings import Settings, to_environ, worker_metrics_port

SCENARIO = "get_product_projection"
WORKERS = (1, 2)
_START_TIMEOUT_S = 60.0


def measure(
    settings: Settings,
    run: Run,
    results: Path,
    serving: Callable[[str], bool],
    interrupted: Any,
) -> dict[str, Any]:
    """rps (and latencies) of :data:`SCENARIO` per worker count, and the ratio."""
    rows: dict[str, Any] = {}
    for workers in WORKERS:
        tag = f"scale-out-w{workers}"
        found = on_read_server(
            settings, workers, [SCENARIO], run, results, tag, serving, interrupted
        )
        rows[f"workers {workers}"] = found[SCENARIO]
    first, last = (rows[f"workers {w}"]["rps"] for w in (WORKERS[0], WORKERS[-1]))
    return {"scenario": SCENARIO, "runs": rows, "ratio": last / first if first else 0.0}


def on_read_server(
    settings: Settings,
    workers: int,
    names: list[str],
    run: Run,
    results: Path,
    tag: str,
    serving: Callable[[str], bool],
    interrupted: Any,
) -> dict[str, Any]:
    """Scenarios ``names``, one after the other, against a read server of ``workers`` started
    here on ``settings`` (free ports) and stopped after: their rows, by name. Its log is
    ``<tag>.log``, each report ``<tag>-<name>.json`` in ``results``."""
    port, base = processes.free_port(), free_metrics_base(workers)
    log = results / f"{tag}.log"
    server = _start(settings, port, base, workers, log)
    rows: dict[str, Any] = {}
    try:
        _wait(server, f"127.0.0.1:{port}", serving, log, workers)
        urls = [f"http://127.0.0.1:{worker_metrics_port(base, i)}/metrics" for i in range(workers)]
        for name in names:
            if interrupted():
                break
            scenario = RPC_SCENARIOS[name]
            report = run_scenario(
                scenario, run, f"127.0.0.1:{port}", urls,
                results / f"{tag}-{name}.json", interrupted,
            )  # fmt: skip
            rows[name] = summary.rpc_row(scenario, report)
    finally:
        processes.stop(server)
    return rows


def free_metrics_base(workers: int) -> int:
    """A metrics port whose ``workers`` worker ports (``worker_metrics_port``) are all free."""
    for _ in range(50):
        base = processes.free_port()
        try:
            for i in range(1, workers):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", worker_metrics_port(base, i)))
        except OSError:
            continue
        return base
    raise SystemExit("cqrs bench: no free metrics ports for the scale-out servers")


def _start(
    settings: Settings, port: int, metrics_base: int, workers: int, log: Path
) -> subprocess.Popen[bytes]:
    server_settings = dataclasses.replace(settings, read_metrics_port=metrics_base)
    env = {**os.environ, **to_environ(server_settings), "PYTHONUNBUFFERED": "1"}
    argv = [sys.executable, "-m", "cqrs", "read-server", "--port", str(port)]
    with log.open("ab") as output:
        return subprocess.Popen(
            [*argv, "--workers", str(workers)], env=env, cwd=ROOT,
            stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip


def _wait(
    server: subprocess.Popen[bytes],
    address: str,
    serving: Callable[[str], bool],
    log: Path,
    workers: int,
) -> None:
    """Until every worker listens (h2load connects once: a late worker would get none)."""
    deadline = time.monotonic() + _START_TIMEOUT_S
    while not serving(address) or log.read_text(errors="replace").count(" listening on ") < workers:
        if server.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"cqrs bench: the scale-out read server at {address} did not start")
        time.sleep(0.2)
