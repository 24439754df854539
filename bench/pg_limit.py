"""The ``pg-limit`` scenario: what this PostgreSQL can commit, beside our writes, in one run.

PostgreSQL's own ``pgbench`` on a scratch database of the same server (created and
dropped here; scale 10): its TPC-B-like transaction (3 updates, 1 select, 1 insert) and
its simple-update variant (``-N``), ``-M prepared``, at the writes' concurrency, for the
scenario's duration. Each transaction's latency comes from pgbench's own log (``-l``), so
the report is ghz's format like every other scenario's. The summary sets our writes at
the same concurrency beside it (``x pgbench``): the group-commit targets are ratios to it.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections import Counter
from pathlib import Path
from subprocess import PIPE
from typing import Any

import asyncpg

from bench import process_cpu, report
from common.settings import Settings

CONCURRENCY = 32
DEFAULT_SECONDS = 10.0
SCALE = 10
MODES = {"tpcb": [], "simple_update": ["-N"]}
# Ours at the same concurrency against pgbench's TPC-B-like tps (issue: group commit).
TARGETS = {"place_order": 0.6, "create_product": 1.0, "update_product": 1.0}


def pgbench() -> str | None:
    """The pgbench binary (PATH, else PostgreSQL's own directory), or None."""
    found = shutil.which("pgbench")
    if found:
        return found
    for root in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (root / "pgbench").exists():
            return str(root / "pgbench")
    return None


async def measure(
    settings: Settings, seconds: float, results: Path, concurrency: int = CONCURRENCY
) -> dict[str, Any]:
    """Run both pgbench modes on a scratch database; their tps and latency percentiles."""
    binary = pgbench()
    if binary is None:
        return {"skipped": "pgbench not installed (Debian: postgresql-contrib / postgresql)"}
    name = f"cqrs_bench_pgbench_{os.getpid()}"
    admin = await asyncpg.connect(settings.asyncpg_dsn)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    dsn = _with_database(settings.asyncpg_dsn, name)
    try:
        await asyncio.to_thread(_run, [binary, "-i", "-q", "-s", str(SCALE), dsn])
        outcome: dict[str, Any] = {"concurrency": concurrency, "seconds": seconds}
        for mode, flags in MODES.items():
            outcome[mode] = await asyncio.to_thread(
                _bench, binary, dsn, flags, concurrency, seconds, results / f"pg-limit-{mode}.json"
            )
        return outcome
    finally:
        admin = await asyncpg.connect(settings.asyncpg_dsn)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


def _with_database(dsn: str, name: str) -> str:
    base, _, query = dsn.partition("?")
    head, _, _ = base.rpartition("/")
    return f"{head}/{name}" + (f"?{query}" if query else "")


def _run(command: list[str]) -> str:
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:3])}: {done.stderr.strip()[-500:]}")
    return done.stdout


def _bench(
    binary: str, dsn: str, flags: list[str], clients: int, seconds: float, path: Path
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="cqrs-pgbench-") as logs:
        prefix = str(Path(logs) / "tx")
        command = [
            binary, *flags, "-M", "prepared", "-c", str(clients), "-j", "2",
            "-T", str(max(1, round(seconds))), "-l", "--log-prefix", prefix, dsn,
        ]  # fmt: skip
        process = subprocess.Popen(command, stdout=PIPE, stderr=PIPE, text=True)
        try:
            window = _cpu_window(process.pid, dsn, seconds)
            out, err = process.communicate(timeout=600)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        if process.returncode != 0:
            raise RuntimeError(f"pgbench: {err.strip()[-500:]}")
        # a log line: client, transaction, latency (us), script, end (epoch s, us)
        logged = [
            line.split()
            for log in Path(logs).glob("tx*")
            for line in log.read_text().splitlines()
            if line.strip()
        ]
    latencies = [int(f[2]) * 1000 for f in logged]
    calls = report.Calls(
        ok_latencies_ns=latencies,
        statuses=Counter({"OK": len(latencies)}),
        total_ns=int(seconds * 1e9),
    )
    ghz = report.build(f"pgbench {' '.join(flags) or 'tpcb'}", calls, {"concurrency": clients})
    ends = [int(f[4]) + int(f[5]) / 1e6 for f in logged]
    shares = _cpu_per_1000(window, ends) if window is not None else {}
    ghz.update(shares)
    path.write_text(json.dumps(ghz, indent=2))
    ordered = sorted(latencies)
    return {
        "tps": _tps(out),
        "p50_ms": report.percentile(ordered, 50) / 1e6,
        "p99_ms": report.percentile(ordered, 99) / 1e6,
        "transactions": len(latencies),
        **shares,
    }


_Moment = tuple[float, process_cpu.Snapshot | None, float | None]


def _cpu_window(pid: int, dsn: str, seconds: float) -> tuple[_Moment, _Moment] | None:
    """pgbench's backends and its own process, a second after its start and a second
    before its end (the backends are gone once it ends); None for a run too short."""
    if seconds < 3:
        return None
    backends = process_cpu.Backends(dsn, ("pgbench",))

    def moment() -> _Moment:
        return time.time(), backends.snapshot(), process_cpu.pid_seconds(pid)

    time.sleep(1.0)
    first = moment()
    time.sleep(seconds - 2.0)
    return first, moment()


def _cpu_per_1000(window: tuple[_Moment, _Moment], ends: list[float]) -> dict[str, float]:
    """PostgreSQL's and pgbench's CPU seconds per 1,000 transactions of the window."""
    (t0, backends0, client0), (t1, backends1, client1) = window
    done = sum(1 for end in ends if t0 < end <= t1)
    if not done or backends0 is None or backends1 is None:
        return {}
    shares = {"postgresCpuSecondsPer1000": process_cpu.spent(backends0, backends1) / done * 1000}
    if client0 is not None and client1 is not None:
        shares["generatorCpuSecondsPer1000"] = (client1 - client0) / done * 1000
    return shares


def _tps(out: str) -> float:
    """pgbench's ``tps = N (without initial connection time)`` line."""
    for line in out.splitlines():
        if line.startswith("tps = "):
            return float(line.split()[2])
    raise RuntimeError(f"no tps in pgbench's output: {out[-300:]}")
