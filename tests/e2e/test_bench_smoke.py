"""Every benchmark scenario runs for about a second against a real system, so the suite
cannot rot: every report has ghz's shape and no call failed. (Benchmarks themselves
are not tests: `make bench`.)"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench import report
from bench.catalogue import RPC_SCENARIOS
from bench.cluster import SCENARIOS as CLUSTER_SCENARIOS
from bench.projector import RUNS
from common.settings import Settings
from tests.support.servers import ROOT, free_port
from tests.support.system import System, running

pytestmark = pytest.mark.e2e


@pytest.fixture
def system(settings: Settings, tmp_path: Path) -> Iterator[System]:
    # h2load reads gRPC statuses from the read server's metrics: give it a port. Small
    # pools: the three servers and the bench's own processes would otherwise hold about
    # half of the shared PostgreSQL's 100 connections (TooManyConnectionsError seen).
    with running(
        settings, tmp_path, CQRS_READ_METRICS_PORT=str(free_port()), CQRS_DB_POOL_SIZE="3"
    ) as system:
        yield system


async def cqrs(system: System, *args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cqrs", *args, env=system.env, cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        out, _ = await asyncio.wait_for(process.communicate(), 600)
    finally:
        if process.returncode is None:  # a timeout (ours or pytest's): leave no bench behind
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return process.returncode, out.decode()


def _local_nats() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 4222), timeout=1):
            return True
    except OSError:
        return False


def only_run(results: Path) -> Path:
    (run,) = [p for p in results.iterdir() if p.is_dir()]
    return run


# Every scenario of every group, a second each, with the system's own start and the
# analytics dataset: about five minutes on 2 cores, more than the suite's default timeout.
@pytest.mark.timeout(600)
async def test_every_scenario_runs_and_reports_in_ghz_format(
    system: System, tmp_path: Path
) -> None:
    code, out = await cqrs(system, "seed", "--products", "300", "--customers", "60")
    assert code == 0, out
    results = tmp_path / "results"
    # A tiny analytics dataset: the writes will have placed more than 200 orders already
    # (the top-up itself is tested with the built-in driver below).
    code, out = await cqrs(
        system, "bench", "--no-seed", "--duration", "1", "--analytics-orders", "200",
        "--watch-streams", "300", "--as-of-events", "250", "--results", str(results),
    )  # fmt: skip
    assert code == 0, out
    run = only_run(results)
    for name in RPC_SCENARIOS:
        written = json.loads((run / f"{name}.json").read_text())
        assert report.problems(written) == [], name
        assert written["count"] > 0, name
        assert set(written["statusCodeDistribution"]) == {"OK"}, (name, written)
    # where a write's CPU went, PostgreSQL being on this host (bench/process_cpu.py)
    orders = json.loads((run / "place_order_c32.json").read_text())
    assert orders["postgresCpuSecondsPer1000"] > 0 and orders["projectorCpuSecondsPer1000"] > 0
    # PostgreSQL's own limit beside the writes: pgbench, in ghz's format too
    limit = json.loads((run / "pg-limit.json").read_text())
    for mode in ("tpcb", "simple_update"):
        assert limit[mode]["tps"] > 0 and limit[mode]["transactions"] > 0, limit
        pgbench = json.loads((run / f"pg-limit-{mode}.json").read_text())
        assert report.problems(pgbench) == [] and pgbench["count"] > 0, mode
    projector = json.loads((run / "projector.json").read_text())
    assert [r["run"] for r in projector["catch_up"]] == list(RUNS)  # 2 processes too
    assert projector["rebuild"]["events_per_s"] > 0
    # Each run's CPU, PostgreSQL's too (a run over a few dozen events may take PostgreSQL
    # less than one clock tick: only the sum is sure to be positive).
    measured = [*projector["catch_up"], projector["rebuild"]]
    assert all(m["projector_cpu_us_per_event"] > 0 for m in measured), measured
    assert all(m["postgres_cpu_us_per_event"] >= 0 for m in measured), measured
    assert sum(m["postgres_cpu_s"] for m in measured) > 0, measured
    relayed = json.loads((run / "relay.json").read_text())
    if _local_nats():
        assert relayed["events"] > 0 and relayed["events_per_s"] > 0, relayed
    else:  # the bench relays to CQRS_NATS_URL or the local NATS, and says when it cannot
        assert "NATS does not answer" in relayed["skipped"], relayed
    analytics = json.loads((run / "analytics-projector.json").read_text())
    assert [r["run"] for r in analytics["catch_up"]] == ["pg:analytics", "all seven"]
    assert analytics["rebuild"] is None and analytics["catch_up"][1]["events_per_s"] > 0
    dataset = json.loads((run / "analytics-dataset.json").read_text())
    assert dataset["orders"] >= 200 and dataset["events"] > 0
    freshness = json.loads((run / "freshness.json").read_text())
    for rate in ("200/s", "500/s"):
        for source in ("projection", "read_model", "write_model"):
            assert freshness[rate]["sources"][source]["samples"] > 0, (rate, source)
    idle = json.loads((run / "watch-idle.json").read_text())
    assert idle["opened"] == idle["streams"] == 300 and idle["errors"] == 0, idle
    assert isinstance(idle["floor_growth_mb"], float), idle  # the bare grpc server beside it
    active = json.loads((run / "watch-active.json").read_text())
    assert active["streams"] == 30 and active["delivered"] > 0 and active["missing"] == 0, active
    time_travel = json.loads((run / "as-of.json").read_text())
    assert time_travel["events"] == 250 and time_travel["with_snapshots"]["calls"] > 0
    assert time_travel["from_first_event"]["calls"] > 0, time_travel
    scale = json.loads((run / "scale-out.json").read_text())
    assert set(scale["runs"]) == {"workers 1", "workers 2"} and scale["ratio"] > 0
    cluster = json.loads((run / "cluster.json").read_text())
    for where in ("one Redis", "cluster"):
        assert cluster["projector"][where][0]["events_per_s"] > 0, cluster
        assert set(cluster["reads"][where]) == set(CLUSTER_SCENARIOS), cluster
        for name, row in cluster["reads"][where].items():
            assert row["rps"] > 0 and row["errors"] == 0, (where, name, row)
    assert all(r > 0 for r in cluster["ratios"].values()), cluster
    # The outbound group (a second of load each: their figures are not judged here)
    webhooks = json.loads((run / "webhooks.json").read_text())
    for phase in ("alone", "beside_slow_and_dead"):
        assert webhooks[phase]["delivered"] == webhooks[phase]["commands"] > 0, webhooks
    assert webhooks["beside_slow_and_dead"]["slow_requests"] > 0, webhooks
    payments = json.loads((run / "payments.json").read_text())
    assert payments["captured"] == payments["orders"] > 0 and payments["captures_per_s"] > 0
    summary = (run / "summary.md").read_text()
    assert "## Outbound: webhooks and payments" in summary
    assert "| floor |" in summary and "## Projector" in summary and "## Freshness" in summary
    assert "## NATS relay" in summary
    assert "## Writes against PostgreSQL's own limit (pgbench, 32 clients, same run)" in summary
    assert "## Redis Cluster (three masters) beside one Redis" in summary
    assert "## Analytics: read model vs write model" in summary
    assert "| GetMonthlyRevenue |" in summary and "Target (read model >= 100x" in summary
    assert (run / "chart.png").stat().st_size > 10_000


async def test_the_builtin_driver_on_reads(system: System, tmp_path: Path) -> None:
    """Where h2load is installed `auto` uses it for reads; the built-in one must work too.
    An analytics scenario first tops the 40 orders up to 200 over 24 months."""
    code, out = await cqrs(system, "seed", "--products", "100", "--customers", "20")
    assert code == 0, out
    results = tmp_path / "results"
    analytics = ["monthly_revenue_read_model", "monthly_revenue_write_model"]
    code, out = await cqrs(
        system, "bench", "floor", "get_product_projection", "list_orders_read_model", *analytics,
        "--no-seed", "--driver", "builtin", "--total", "200", "--analytics-orders", "200",
        "--results", str(results),
    )  # fmt: skip
    assert code == 0, out
    run = only_run(results)
    dataset = json.loads((run / "analytics-dataset.json").read_text())
    assert (dataset["seeded"], dataset["orders"], dataset["months"]) == (160, 200, 24)
    assert dataset["currencies"] == 2
    assert "| GetMonthlyRevenue |" in (run / "summary.md").read_text()
    for name in ("floor", "get_product_projection", "list_orders_read_model", *analytics):
        written = json.loads((run / f"{name}.json").read_text())
        assert report.problems(written) == []
        assert written["count"] == 200 and written["statusCodeDistribution"] == {"OK": 200}
        assert written["options"]["driver"] == "builtin"
        assert written["generatorCpuSecondsPer1000"] > 0


async def test_ctrl_c_stops_with_a_partial_report(system: System, tmp_path: Path) -> None:
    code, out = await cqrs(system, "seed", "--products", "50", "--customers", "10")
    assert code == 0, out
    results = tmp_path / "results"
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cqrs", "bench", "floor", "get_product_projection", "--no-seed",
        "--driver", "builtin", "--duration", "60", "--results", str(results),
        env=system.env, cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    assert process.stdout is not None
    seen = b""
    while b"cqrs bench: floor" not in seen:  # the floor scenario has begun
        line = await asyncio.wait_for(process.stdout.readline(), 60)
        assert line, seen.decode()
        seen += line
    await asyncio.sleep(3)
    process.send_signal(signal.SIGINT)
    out, _ = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 130, (seen + out).decode()
    floor = only_run(results)
    written = json.loads((floor / "floor.json").read_text())
    assert written["endReason"] == "cancel"
    assert report.problems(written) == [] and written["count"] > 0
    assert not (floor / "get_product_projection.json").exists()  # never started
    assert "| floor (cancel) |" in (floor / "summary.md").read_text()
