"""``cqrs bench``: run scenarios against a system and write ``bench/results/<UTC time>/``.

The system is the one answering at the configured addresses (``make run``), or, with
``--start`` when none answers, one started here like ``cqrs up`` (stopped at the end).
The dataset is ``cqrs seed``'s; it is seeded first when the database holds less.
The analytics group (last) first tops the orders up to ``--analytics-orders`` with a
``cqrs seed --months 24`` of its own and waits for ``pg:analytics`` to apply it.
Ctrl-C stops the scenario under way, keeps its partial report and writes the summary
of what ran.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

import asyncpg
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench import (
    as_of,
    cluster,
    data,
    freshness,
    outbound,
    pg_limit,
    process_cpu,
    processes,
    projector,
    relay,
    scale_out,
    summary,
    watch,
)
from bench.catalogue import OTHER_SCENARIOS, ROOT, RPC_SCENARIOS, select
from bench.rpc import Run, run_scenario
from common.pb.shop.v1 import command_service_pb2 as cpb
from common.pb.shop.v1 import command_service_pb2_grpc as cpb_grpc
from common.pb.shop.v1 import query_service_pb2 as qpb
from common.pb.shop.v1 import query_service_pb2_grpc as qpb_grpc
from common.positions import encode_token
from common.settings import Settings, to_environ

SEED_PRODUCTS = 10_000
FRESHNESS_RATES = (200.0, 500.0)
FRESHNESS_SECONDS = 8.0
_START_TIMEOUT_S = 120.0
# The analytics dataset: orders over 24 months, 5 per customer, a tenth of the products in
# USD; one product per 20 orders (so stock lasts), between 50 and 5,000.
ANALYTICS_ORDERS = 100_000
ANALYTICS_MONTHS = 24
ANALYTICS_ORDERS_PER_CUSTOMER = 5
ANALYTICS_ORDERS_PER_PRODUCT = 20
ANALYTICS_PRODUCTS = (50, 5_000)
ANALYTICS_USD_SHARE = 0.1
_ANALYTICS_TIMEOUT_S = 1800.0  # for the projector to apply the analytics dataset


@dataclass(frozen=True, slots=True)
class Plan:
    scenarios: list[str]
    run: Run
    start: bool
    seed: bool = True  # seed the demo dataset when the database holds less
    analytics_orders: int = ANALYTICS_ORDERS  # the analytics group tops orders up to this
    watch_streams: int = watch.IDLE_STREAMS  # idle Watch streams (a tenth: the active ones)
    as_of_events: int = as_of.EVENTS  # the history time travel is measured on
    results_root: Path = ROOT / "bench" / "results"
    command: str = "cqrs bench"
    # The cluster group's Redis Cluster (bench/cluster.py); None: that group is skipped.
    redis_cluster: cluster.ClusterFactory | None = None


class _Interrupted:
    """The first Ctrl-C stops gently (partial report, summary); a second one at once."""

    def __init__(self) -> None:
        self.set = False
        self._previous = signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.set:
            raise KeyboardInterrupt
        self.set = True
        print("\ncqrs bench: stopping (Ctrl-C again to abort)", file=sys.stderr, flush=True)

    def __call__(self) -> bool:
        return self.set

    def restore(self) -> None:
        signal.signal(signal.SIGINT, self._previous)


def main(settings: Settings, plan: Plan) -> int:
    """Run ``plan``; 0 if every scenario ran without a failed call."""
    names = select(plan.scenarios)
    results = plan.results_root / datetime.now(UTC).strftime("%Y-%m-%dT%H-%M-%SZ")
    results.mkdir(parents=True, exist_ok=True)
    started_system = _ensure_system(settings, plan.start, results / "system.log")
    interrupted = _Interrupted()
    try:
        asyncio.run(_ensure_dataset(settings, plan.seed))
        asyncio.run(data.write_data_files(settings.asyncpg_dsn))
        if any(RPC_SCENARIOS.get(n) and RPC_SCENARIOS[n].group == "writes" for n in names):
            asyncio.run(_stock_up(settings))
        outcomes = _run_all(settings, plan, names, results, interrupted)
        machine = asyncio.run(summary.machine(settings))
        text = summary.write(results, outcomes, machine, plan.command)
        print(text)
        print(f"cqrs bench: results in {results}", file=sys.stderr)
        failed = sum(o.get("errors", 0) for o in outcomes.values() if isinstance(o, dict))
        return 130 if interrupted() else (1 if failed else 0)
    finally:
        interrupted.restore()
        if started_system is not None:
            processes.stop(started_system, signal.SIGINT, timeout=60)


def _run_all(
    settings: Settings,
    plan: Plan,
    names: list[str],
    results: Path,
    interrupted: _Interrupted,
) -> dict[str, Any]:
    read = f"127.0.0.1:{settings.read_port}"
    write = f"127.0.0.1:{settings.write_port}"

    def metrics(port: int) -> list[str]:
        return [f"http://127.0.0.1:{port}/metrics"] if port else []

    outcomes: dict[str, Any] = {}
    for name in names:
        if interrupted():
            break
        if group_of(name) == "analytics" and "analytics-dataset" not in outcomes:
            dataset = asyncio.run(_ensure_analytics(settings, plan.analytics_orders))
            chosen = [RPC_SCENARIOS[n] for n in names if n in RPC_SCENARIOS]
            asyncio.run(
                data.write_data_files(
                    settings.asyncpg_dsn, scenarios=[s for s in chosen if s.group == "analytics"]
                )
            )
            (results / "analytics-dataset.json").write_text(json.dumps(dataset, indent=2))
            outcomes["analytics-dataset"] = dataset
        print(f"cqrs bench: {name}", file=sys.stderr, flush=True)
        scenario = RPC_SCENARIOS.get(name)
        if scenario is not None:
            on_read = scenario.server == "read"
            target = read if on_read else write
            port = settings.read_metrics_port if on_read else settings.write_metrics_port
            shares = process_cpu.Shares(settings.asyncpg_dsn, f"cqrs-{scenario.server}-server")
            report = run_scenario(
                scenario, plan.run, target, metrics(port), results / f"{name}.json", interrupted,
                shares,
            )  # fmt: skip
            outcomes[name] = summary.rpc_row(scenario, report)
            continue
        if name == "projector":
            outcome: dict[str, Any] = asyncio.run(projector.measure(settings))
        elif name == "pg-limit":
            seconds = plan.run.duration_s or pg_limit.DEFAULT_SECONDS
            outcome = asyncio.run(pg_limit.measure(settings, seconds, results))
        elif name == "relay":
            outcome = asyncio.run(relay.measure_copy(settings))
        elif name == "analytics-projector":
            outcome = asyncio.run(
                projector.measure(settings, projector.ANALYTICS_RUNS, rebuild=False)
            )
        elif group_of(name) == "outbound":
            seconds = plan.run.duration_s or outbound.DEFAULT_SECONDS
            outcome = asyncio.run(outbound.measure(settings, name, seconds, results))
        elif name == "freshness":
            seconds = plan.run.duration_s or FRESHNESS_SECONDS
            outcome = {
                f"{rate:g}/s": asyncio.run(freshness.measure(write, read, rate, seconds))
                for rate in FRESHNESS_RATES
            }
        elif name == "watch-idle":
            ids = asyncio.run(watch.product_ids(settings.asyncpg_dsn, plan.watch_streams))
            outcome = asyncio.run(
                watch.measure_idle(read, settings.read_metrics_port, ids, plan.watch_streams)
            )
        elif name == "watch-active":
            seconds = plan.run.duration_s or FRESHNESS_SECONDS
            active = max(1, plan.watch_streams // 10)
            ids = asyncio.run(watch.product_ids(settings.asyncpg_dsn, active))
            outcome = asyncio.run(watch.measure_active(write, read, ids, seconds))
        elif name == "as-of":
            outcome = asyncio.run(
                as_of.measure(
                    write, read, settings.asyncpg_dsn, settings.snapshot_every, plan.as_of_events
                )
            )
        elif name == "cluster":
            outcome = cluster.measure(
                settings, plan.run, results, _serving, interrupted, plan.redis_cluster
            )
        else:  # scale-out
            outcome = scale_out.measure(settings, plan.run, results, _serving, interrupted)
        (results / f"{name}.json").write_text(json.dumps(outcome, indent=2))
        outcomes[name] = outcome
    return outcomes


def group_of(name: str) -> str:
    """The group of a scenario name."""
    scenario = RPC_SCENARIOS.get(name)
    return scenario.group if scenario is not None else OTHER_SCENARIOS[name]


# -- the system and its dataset ---------------------------------------------------------------


def _serving(address: str) -> bool:
    with grpc.insecure_channel(address) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=1
            )
        except grpc.RpcError:
            return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def _ensure_system(settings: Settings, start: bool, log: Path) -> subprocess.Popen[bytes] | None:
    """The system under test: the running one, or one started here (returned; its output
    goes to ``log``)."""
    addresses = [f"127.0.0.1:{settings.write_port}", f"127.0.0.1:{settings.read_port}"]
    if all(_serving(a) for a in addresses):
        return None
    if not start:
        raise SystemExit(
            f"cqrs bench: no system answers at {', '.join(addresses)}; "
            "start one with `make run`, or pass --start"
        )
    print(f"cqrs bench: starting the system (cqrs up; output in {log})", file=sys.stderr)
    env = {**os.environ, **to_environ(settings), "PYTHONUNBUFFERED": "1"}
    with log.open("ab") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "cqrs", "up"], env=env, cwd=ROOT,
            stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    deadline = time.monotonic() + _START_TIMEOUT_S
    while not all(_serving(a) for a in addresses):
        if process.poll() is not None or time.monotonic() > deadline:
            processes.stop(process, signal.SIGINT, timeout=60)
            raise SystemExit("cqrs bench: `cqrs up` did not start (try it yourself)")
        time.sleep(0.5)
    return process


async def _ensure_dataset(settings: Settings, seed: bool) -> None:
    """Seed the demo dataset unless the database holds it (or ``seed`` is off), then wait
    for every projection, the analytics included, to apply the whole log."""
    conn = await asyncpg.connect(settings.asyncpg_dsn)
    try:
        products = await conn.fetchval("SELECT count(*) FROM products WHERE deleted_at IS NULL")
    finally:
        await conn.close()
    if seed and products < SEED_PRODUCTS:
        print("cqrs bench: seeding the demo dataset (cqrs seed)", file=sys.stderr, flush=True)
        await _seed(settings)
    # Every consumer, pg:analytics too: one still catching up would compete for the cores
    # with the first scenarios (measured: get_customer_projection 20 % lower behind it).
    await _caught_up(settings, _ANALYTICS_TIMEOUT_S, analytics=True)


async def _seed(settings: Settings, *args: str) -> None:
    env = {**os.environ, **to_environ(settings)}
    seeded = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cqrs", "seed", *args, env=env, cwd=ROOT
    )
    if await seeded.wait() != 0:
        raise SystemExit("cqrs bench: `cqrs seed` failed")


def analytics_seed_args(orders: int) -> list[str]:
    """``cqrs seed`` arguments adding at least ``orders`` orders spread over past months."""
    customers = math.ceil(orders / ANALYTICS_ORDERS_PER_CUSTOMER)
    low, high = ANALYTICS_PRODUCTS
    products = min(high, max(low, math.ceil(orders / ANALYTICS_ORDERS_PER_PRODUCT)))
    return [
        "--products", str(products), "--customers", str(customers),
        "--orders-per-customer", str(ANALYTICS_ORDERS_PER_CUSTOMER),
        "--months", str(ANALYTICS_MONTHS), "--usd-share", f"{ANALYTICS_USD_SHARE:g}",
    ]  # fmt: skip


async def _ensure_analytics(settings: Settings, wanted: int) -> dict[str, Any]:
    """Top the orders up to ``wanted`` (``cqrs seed --months``), wait until every source,
    ``pg:analytics`` included, has applied the whole log; what the database then holds."""
    have = await _count_orders(settings)
    if have < wanted:
        args = analytics_seed_args(wanted - have)
        print(
            f"cqrs bench: {have:,} orders; seeding {wanted - have:,} more for the analytics "
            f"(cqrs seed {' '.join(args)})",
            file=sys.stderr,
            flush=True,
        )
        await _seed(settings, *args)
    print("cqrs bench: waiting for the projections to apply the log", file=sys.stderr, flush=True)
    started = time.monotonic()
    await _caught_up(settings, _ANALYTICS_TIMEOUT_S, analytics=True)
    waited = time.monotonic() - started
    conn = await asyncpg.connect(settings.asyncpg_dsn)
    try:
        row = await conn.fetchrow(
            """SELECT (SELECT count(*) FROM orders) AS orders,
                      (SELECT count(*) FROM order_items) AS order_items,
                      (SELECT count(*) FROM customers) AS customers,
                      (SELECT count(*) FROM products) AS products,
                      (SELECT count(DISTINCT date_trunc('month', created_at AT TIME ZONE 'UTC'))
                       FROM orders) AS months,
                      (SELECT count(DISTINCT currency) FROM orders) AS currencies,
                      (SELECT count(*) FROM events) AS events"""
        )
    finally:
        await conn.close()
    print(f"cqrs bench: the projections caught up in {waited:.0f} s", file=sys.stderr)
    return {**dict(row), "seeded": max(0, wanted - have), "caught_up_s": waited}


async def _count_orders(settings: Settings) -> int:
    conn = await asyncpg.connect(settings.asyncpg_dsn)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM orders"))
    finally:
        await conn.close()


async def _caught_up(
    settings: Settings, timeout_s: float = _START_TIMEOUT_S, analytics: bool = False
) -> None:
    """Until every read source (and, with ``analytics``, ``pg:analytics``) has applied the
    whole log: calls with a consistency token of its head, retried while UNAVAILABLE."""
    conn = await asyncpg.connect(settings.asyncpg_dsn)
    try:
        head = await projector.log_head(conn)
    finally:
        await conn.close()
    if head is None:
        raise SystemExit("cqrs bench: the event log is empty: run `cqrs seed` (or drop --no-seed)")
    token = encode_token(head)
    deadline = time.monotonic() + timeout_s
    month = datetime.now(UTC).strftime("%Y-%m")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{settings.read_port}") as channel:
        stub = qpb_grpc.QueryServiceStub(channel)
        calls: list[tuple[Any, Any]] = [
            (call, request(page_size=1, source=source, consistency_token=token))
            for source in (qpb.SOURCE_PROJECTION, qpb.SOURCE_READ_MODEL)
            for call, request in (
                (stub.ListProducts, qpb.ListProductsRequest),
                (stub.ListCustomers, qpb.ListCustomersRequest),
                (stub.ListOrders, qpb.ListOrdersRequest),
            )
        ]
        if analytics:
            revenue = qpb.GetMonthlyRevenueRequest(
                from_month=month, to_month=month,
                source=qpb.SOURCE_READ_MODEL, consistency_token=token,
            )  # fmt: skip
            calls.append((stub.GetMonthlyRevenue, revenue))
        for call, request in calls:
            while True:
                try:
                    await call(request)
                    break
                except grpc.aio.AioRpcError as exc:
                    if exc.code() != grpc.StatusCode.UNAVAILABLE:
                        raise
                    if time.monotonic() > deadline:
                        raise SystemExit("cqrs bench: the projections did not catch up") from exc


async def _stock_up(settings: Settings) -> None:
    """Plenty of stock for the products the PlaceOrder data orders (through the write side)."""
    ids = {
        item["product_id"]
        for scenario in RPC_SCENARIOS.values()
        if scenario.request == "place_order"
        for request in json.loads(scenario.data_file.read_text())
        for item in request["items"]
    }
    async with grpc.aio.insecure_channel(f"127.0.0.1:{settings.write_port}") as channel:
        stub = cpb_grpc.CommandServiceStub(channel)
        for ident in sorted(ids):
            await stub.UpdateProduct(cpb.UpdateProductRequest(id=ident, stock=1_000_000))
