"""``cqrs read-server --workers N`` (and ``write-server``): N processes on one port.

gRPC binds with ``SO_REUSEPORT`` (grpc's default on Linux), so N server processes
listening on the same address share its connections, the kernel spreading new
connections over them: a server's work uses N cores instead of one. This process
only supervises: it starts the workers, restarts one that dies (after a pause that
grows while they keep dying, so a broken configuration does not spin), and passes
SIGTERM/SIGINT on, waiting for the workers to drain.

Metrics: worker ``i`` serves Prometheus on ``base + 100 * i`` (``base`` = the
configured metrics port; 0 keeps them all off: ``worker_metrics_port``), so a scrape config lists one target per worker
and sums; no shared multiprocess directory to clean up.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time

from common.settings import Settings, to_environ, worker_metrics_port
from cqrs.children import Child, say, stop_children, stop_on_signals, stop_timeout

RESTART_FIRST_S = 0.5
RESTART_MAX_S = 10.0
# A worker that ran this long before dying was healthy: restart it without delay growth.
HEALTHY_RUN_S = 30.0


def worker_settings(settings: Settings, server: str, index: int) -> Settings:
    """The settings of worker ``index``: one process, its own metrics port."""
    if server == "read-server":
        port = settings.read_metrics_port
        return dataclasses.replace(
            settings, read_workers=1, read_metrics_port=worker_metrics_port(port, index)
        )
    port = settings.write_metrics_port
    return dataclasses.replace(
        settings, write_workers=1, write_metrics_port=worker_metrics_port(port, index)
    )


def serve_workers(settings: Settings, server: str, count: int) -> int:
    """Run ``count`` workers of ``server`` until SIGTERM/SIGINT; the exit code."""
    port = settings.read_port if server == "read-server" else settings.write_port
    if port == 0:
        say(f"{server} --workers {count}: needs a fixed port (workers share it)", err=True)
        return 2
    with stop_on_signals() as stop:
        workers = [_start(settings, server, i) for i in range(count)]
        started = [time.monotonic()] * count
        delays = [RESTART_FIRST_S] * count
        say(f"{server}: {count} workers on port {port}, pids {[w.process.pid for w in workers]}")
        try:
            while not stop.wait(0.2):
                for i, worker in enumerate(workers):
                    code = worker.process.poll()
                    if code is None:
                        continue
                    worker.drain()
                    ran = time.monotonic() - started[i]
                    if ran >= HEALTHY_RUN_S:
                        delays[i] = RESTART_FIRST_S
                    say(
                        f"{server}: worker {i} exited with code {code} after {ran:.1f}s; "
                        f"restarting in {delays[i]:.1f}s; its last output:\n{worker.tail()}",
                        err=True,
                    )
                    if stop.wait(delays[i]):
                        break
                    delays[i] = min(delays[i] * 2, RESTART_MAX_S)
                    workers[i] = _start(settings, server, i)
                    started[i] = time.monotonic()
        finally:
            stop_children(workers, stop_timeout(settings))
    return 0


def _start(settings: Settings, server: str, index: int) -> Child:
    env = {**os.environ, **to_environ(worker_settings(settings, server, index))}
    env["PYTHONUNBUFFERED"] = "1"
    argv = [sys.executable, "-m", "cqrs", server, "--supervisor", str(os.getpid())]
    return Child(f"{server}[{index}]", argv, env)
