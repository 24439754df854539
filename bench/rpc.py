"""Running one RPC scenario: requests from its data file, a driver, a ghz report."""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pool, json_format, message_factory
from grpc_health.v1 import health_pb2  # noqa: F401

from bench import process_cpu, report
from bench.catalogue import GHZ_DIR, RpcScenario
from bench.drivers import builtin, ghz, h2load
from bench.drivers.builtin import Load

# The request and response types must be in the default descriptor pool.
from common.pb.shop.v1 import command_service_pb2, query_service_pb2  # noqa: F401


@dataclass(frozen=True, slots=True)
class Run:
    """How hard and how long every RPC scenario of this run is driven."""

    duration_s: float | None
    total: int | None
    concurrency: int | None  # None: each scenario's own
    connections: int
    workers: int
    driver: str  # auto | ghz | h2load | builtin
    warmup_s: float = 1.0  # driven, unmeasured, before each scenario (connections, caches)


def bodies(scenario: RpcScenario) -> list[bytes]:
    """The scenario's data file as serialized requests."""
    method = descriptor_pool.Default().FindMethodByName(scenario.call)
    request_class = message_factory.GetMessageClass(method.input_type)
    entries = json.loads(scenario.data_file.read_text())
    return [json_format.ParseDict(e, request_class()).SerializeToString() for e in entries]


def choose_driver(wanted: str, scenario: RpcScenario) -> str:
    """``auto``: ghz if installed, else h2load for reads (one fixed body is fair there),
    else the built-in generator (always for writes: each command needs its own data)."""
    if wanted != "auto":
        return wanted
    if ghz.available():
        return "ghz"
    if scenario.group in ("floor", "reads", "analytics") and h2load.available():
        return "h2load"
    return "builtin"


def run_scenario(
    scenario: RpcScenario,
    run: Run,
    target: str,
    metrics_urls: Sequence[str],
    output: Path,
    stop: Any,
    shares: process_cpu.Shares | None = None,
) -> dict[str, Any]:
    """Drive ``scenario`` against ``target`` and write its ghz-format report to ``output``
    (``metrics_urls``: the server's workers' ``/metrics``, for statuses and CPU; ``shares``:
    PostgreSQL's and the projector's CPU on this host)."""
    driver = choose_driver(run.driver, scenario)
    load = Load(
        target=target,
        method=scenario.path,
        bodies=bodies(scenario),
        concurrency=run.concurrency or scenario.concurrency,
        connections=min(run.connections, run.concurrency or scenario.concurrency),
        duration_s=run.duration_s,
        total=run.total,
        workers=run.workers,
    )
    options = {
        "call": scenario.call,
        "host": target,
        "concurrency": load.concurrency,
        "connections": load.connections,
        "duration": f"{run.duration_s:g}s" if run.duration_s else None,
        "total": run.total,
        "driver": driver,
        "warmup": f"{run.warmup_s:g}s",
        "data-file": str(scenario.data_file),
    }
    counters = h2load.ServerCounters(metrics_urls, scenario.path) if metrics_urls else None
    if driver == "ghz":
        result = ghz.run(load, GHZ_DIR / f"{scenario.name}.json", output)
    else:
        if driver == "h2load" and counters is None:
            raise RuntimeError("h2load needs the server's metrics port for gRPC statuses")
        if run.warmup_s:
            if driver == "h2load" and counters is not None:
                h2load.run(_warmup(load, run.warmup_s), counters)
            else:
                builtin.run(_warmup(load, run.warmup_s), stop=stop)
        server_cpu_before = counters.snapshot()[1] if counters is not None else None
        shares_before = shares.snapshot() if shares is not None else None
        if driver == "h2load" and counters is not None:
            calls = h2load.run(load, counters)
        else:
            calls = builtin.run(load, on_progress=_progress(scenario.name), stop=stop)
            if sys.stderr.isatty():
                sys.stderr.write("\n")
        ended = "cancel" if stop() else "normal"
        result = report.build(scenario.name, calls, options, end_reason=ended)
        result["generatorCpuSecondsPer1000"] = (
            calls.generator_cpu_s / calls.count * 1000 if calls.count else 0.0
        )
        if counters is not None and server_cpu_before is not None and calls.count:
            server_cpu = counters.snapshot()[1] - server_cpu_before
            result["serverCpuSecondsPer1000"] = server_cpu / calls.count * 1000
        if shares is not None and shares_before is not None:
            result.update(shares.per_1000(shares_before, shares.snapshot(), calls.count))
        output.write_text(json.dumps(result, indent=2))
    return result


def _warmup(load: Load, seconds: float) -> Load:
    return dataclasses.replace(load, duration_s=seconds, total=None)


def _progress(name: str) -> Any:
    """A line a second (redrawn in place on a terminal): calls so far and the rate."""
    last = [0.0]
    start, end = ("\r", "") if sys.stderr.isatty() else ("", "\n")

    def show(calls: int, seconds: float) -> None:
        if seconds - last[0] >= 1.0:
            last[0] = seconds
            rate = calls / seconds if seconds else 0.0
            line = f"  {name}: {seconds:4.0f} s  {calls:>8,} calls  {rate:>8,.0f}/s"
            sys.stderr.write(f"{start}{line}{end}")
            sys.stderr.flush()

    return show
