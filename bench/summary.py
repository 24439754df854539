"""The run's summary: ``summary.md`` (tables) and ``chart.png`` (reads per source)."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import asyncpg
from redis.asyncio import Redis

from bench.as_of import TARGET_MS as AS_OF_TARGET_MS
from bench.catalogue import ANALYTICS_CALLS, ANALYTICS_SOURCES, SOURCES, RpcScenario
from bench.outbound import TARGET_CAPTURES_S
from bench.pg_limit import TARGETS as PG_LIMIT_TARGETS
from bench.projector import ANALYTICS
from bench.watch import ACTIVE_P99_TARGET_MS, IDLE_RSS_TARGET_MB
from common.settings import Settings

_NS_PER_MS = 1e6
# The analytics issue's targets: read model rps >= 100x the write model's for these, and
# the projector >= 10,000 events/s with the analytics consumer among its projections.
ANALYTICS_RATIO_TARGET = 100.0
ANALYTICS_RATIO_SHAPES = ("monthly_revenue", "top_products")
PROJECTOR_TARGET_EVENTS_S = 10_000.0  # on the grown log (470k events)
DEMO_LOG_TARGET_EVENTS_S = 12_000.0
GROWN_LOG_EVENTS = 300_000  # a log this long is the grown one (the demo log: ~134k events)
PROJECTOR_TARGET_RUN = "all seven"
REBUILD_TARGET_EVENTS_S = 15_000.0
TWO_PROCESSES_RUN = "all seven, 2 processes"
TWO_PROCESSES_TARGET_X = 1.3
# The same pair following the log from built copies, the projections in two segments.
FOLLOWING_RUN = "all seven, following"
SEGMENTS_RUN = "all seven, following, 2 processes, 2 segments"


def rpc_row(scenario: RpcScenario, report: dict[str, Any]) -> dict[str, Any]:
    """The figures of one RPC scenario's ghz report that the summary shows."""
    latency = {d["percentage"]: d["latency"] for d in report["latencyDistribution"]}
    statuses = report["statusCodeDistribution"]
    return {
        "kind": "rpc",
        "group": scenario.group,
        "entity": scenario.entity,
        "source": scenario.source,
        "shape": scenario.shape if scenario.source else "",
        "driver": report["options"].get("driver", "ghz"),
        "concurrency": report["options"].get("concurrency"),
        "rps": report["rps"],
        "p50_ms": latency.get(50, 0) / _NS_PER_MS,
        "p95_ms": latency.get(95, 0) / _NS_PER_MS,
        "p99_ms": latency.get(99, 0) / _NS_PER_MS,
        "errors": report["count"] - statuses.get("OK", 0),
        "statuses": statuses,
        "gen_cpu_per_1k": report.get("generatorCpuSecondsPer1000"),
        "server_cpu_per_1k": report.get("serverCpuSecondsPer1000"),
        "postgres_cpu_per_1k": report.get("postgresCpuSecondsPer1000"),
        "projector_cpu_per_1k": report.get("projectorCpuSecondsPer1000"),
        "ended": report.get("endReason", "normal"),
    }


def _proc(path: str, key: str) -> str:
    """The value of ``key`` in a ``/proc`` file of ``key: value`` lines ("" if absent)."""
    try:
        text = Path(path).read_text()
    except OSError:
        return ""
    return next(
        (line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith(key)), ""
    )


async def machine(settings: Settings) -> dict[str, str]:
    """What the figures were measured on."""
    model = _proc("/proc/cpuinfo", "model name") or "unknown CPU"
    kb = _proc("/proc/meminfo", "MemTotal").split(" ")[0]
    memory = f"{int(kb) / 1024 / 1024:.0f} GiB" if kb.isdigit() else ""
    conn = await asyncpg.connect(settings.asyncpg_dsn)
    try:
        postgres = str(await conn.fetchval("SHOW server_version")).split()[0]
    finally:
        await conn.close()
    redis = Redis.from_url(settings.redis_url)
    try:
        redis_version = str((await redis.info("server"))["redis_version"])
    finally:
        await redis.aclose()
    return {
        "cpu": f"{os.cpu_count()} cores ({model})",
        "memory": memory,
        "system": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "postgresql": postgres,
        "redis": redis_version,
    }


def write(results: Path, outcomes: dict[str, Any], machine: dict[str, str], command: str) -> str:
    """Write ``summary.md`` and ``chart.png`` into ``results``; the markdown."""
    lines = [f"# cqrs bench, {results.name}", ""]
    lines += [
        f"Machine: {machine['cpu']}, {machine['memory']}, {machine['system']}; "
        f"Python {machine['python']}, PostgreSQL {machine['postgresql']}, "
        f"Redis {machine['redis']}. Command: `{command}`.",
        "",
    ]
    rpc = {
        name: o for name, o in outcomes.items() if isinstance(o, dict) and o.get("kind") == "rpc"
    }
    if rpc:
        lines += _rpc_table(rpc)
        lines += _ratios(rpc)
    if "pg-limit" in outcomes:
        lines += pg_limit_table(outcomes["pg-limit"], rpc)
    if "projector" in outcomes:
        lines += _projector_table(outcomes["projector"])
    if "relay" in outcomes:
        lines += _relay_table(outcomes["relay"])
    if "freshness" in outcomes:
        lines += _freshness_table(outcomes["freshness"])
    if "watch-idle" in outcomes or "watch-active" in outcomes:
        lines += watch_table(outcomes)
    if "as-of" in outcomes:
        lines += as_of_table(outcomes["as-of"])
    if "scale-out" in outcomes:
        lines += _scale_out_table(outcomes["scale-out"])
    if "cluster" in outcomes:
        lines += cluster_tables(outcomes["cluster"])
    lines += outbound_table(outcomes)
    lines += analytics_tables(rpc, outcomes)
    text = "\n".join(lines)
    (results / "summary.md").write_text(text)
    if any(o["group"] == "reads" for o in rpc.values()):
        _chart(rpc, results / "chart.png")
    return text


def _rpc_table(rpc: dict[str, dict[str, Any]]) -> list[str]:
    floor = rpc.get("floor", {}).get("rps")
    lines = [
        "## RPCs",
        "",
        "| scenario | driver | concurrency | rps | p50 ms | p95 ms | p99 ms | errors "
        "| x floor | server CPU s / 1k calls | generator CPU s / 1k calls |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, row in rpc.items():
        of_floor = f"{row['rps'] / floor:.2f}" if floor and row["group"] != "writes" else ""
        ended = "" if row["ended"] == "normal" else f" ({row['ended']})"
        lines.append(
            f"| {name}{ended} | {row['driver']} | {row['concurrency']} | {row['rps']:,.0f} "
            f"| {row['p50_ms']:.2f} | {row['p95_ms']:.2f} | {row['p99_ms']:.2f} "
            f"| {row['errors']} | {of_floor} | {_cpu(row['server_cpu_per_1k'])} "
            f"| {_cpu(row['gen_cpu_per_1k'])} |"
        )
    return [*lines, ""]


def _cpu(seconds: float | None) -> str:
    return "" if seconds is None else f"{seconds:.3f}"


def _ratios(rpc: dict[str, dict[str, Any]]) -> list[str]:
    """Per read RPC: the projection and the read model against the write model."""
    shapes: dict[str, dict[str, float]] = {}
    for row in rpc.values():
        if row["group"] == "reads":
            shapes.setdefault(row["shape"], {})[row["source"]] = row["rps"]
    if not shapes:
        return []
    lines = [
        "## Projection vs read model vs write model (rps, and x the write model)",
        "",
        "| read | projection | read model | write model | projection x | read model x |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for shape, by_source in shapes.items():
        base = by_source.get("write_model")
        cells = [f"{by_source[s]:,.0f}" if s in by_source else "" for s in SOURCES]
        ratios = [
            f"{by_source[s] / base:.2f}" if base and s in by_source else ""
            for s in ("projection", "read_model")
        ]
        lines.append(f"| {shape} | " + " | ".join(cells + ratios) + " |")
    return [*lines, ""]


def pg_limit_table(outcome: dict[str, Any], rpc: dict[str, dict[str, Any]]) -> list[str]:
    """pgbench beside our writes at its concurrency (bench/pg_limit.py), and the targets."""
    if "skipped" in outcome:
        return [
            "## Writes against PostgreSQL's own limit",
            "",
            f"skipped: {outcome['skipped']}",
            "",
        ]
    c = outcome["concurrency"]
    tpcb = outcome["tpcb"]["tps"]
    lines = [
        f"## Writes against PostgreSQL's own limit (pgbench, {c} clients, same run)",
        "",
        "| what | tps / rps | p50 ms | p99 ms | x pgbench TPC-B | target |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for mode, label in (("tpcb", "pgbench TPC-B-like"), ("simple_update", "pgbench simple-update")):
        row = outcome[mode]
        lines.append(
            f"| {label} | {row['tps']:,.0f} | {row['p50_ms']:.2f} | {row['p99_ms']:.2f} "
            f"| {row['tps'] / tpcb:.2f} | |"
        )
    for shape, target in PG_LIMIT_TARGETS.items():
        row = rpc.get(f"{shape}_c{c}")
        if row is None:
            continue
        ratio = row["rps"] / tpcb if tpcb else 0.0
        lines.append(
            f"| {shape} (ours) | {row['rps']:,.0f} | {row['p50_ms']:.2f} | {row['p99_ms']:.2f} "
            f"| {ratio:.2f} | >= {target:g}x: {'met' if ratio >= target else 'missed'} |"
        )
    return [*lines, "", *_cpu_budget_table(outcome, rpc)]


# An RPC row's CPU per call, in the budget table's column order (bench/process_cpu.py).
_CPU_PARTS = ("gen_cpu_per_1k", "server_cpu_per_1k", "postgres_cpu_per_1k", "projector_cpu_per_1k")


def _cpu_budget_table(outcome: dict[str, Any], rpc: dict[str, dict[str, Any]]) -> list[str]:
    """What each command costs the machine's parts, beside what the cores give one at the
    target ratio (bench/process_cpu.py; pgbench has the machine to itself)."""
    tpcb = outcome["tpcb"]
    if tpcb.get("postgresCpuSecondsPer1000") is None:
        return []
    cores = os.cpu_count() or 1
    lines = [
        "CPU per command or transaction, ms (`/proc` of this host): the share of each part,",
        f"and what {cores} cores give one command at its target ratio to pgbench TPC-B.",
        "",
        "| what | load generator | server | PostgreSQL | projector | all | cores give |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    rows: list[tuple[str, list[float | None], float | None]] = [
        (
            "pgbench TPC-B-like",
            [tpcb.get("generatorCpuSecondsPer1000"), None, tpcb["postgresCpuSecondsPer1000"], None],
            None,
        )
    ]
    for shape, target in PG_LIMIT_TARGETS.items():
        row = rpc.get(f"{shape}_c{outcome['concurrency']}")
        if row is None or row.get("postgres_cpu_per_1k") is None:
            continue
        budget = cores * 1000 / (target * tpcb["tps"]) if tpcb["tps"] else None
        rows.append((f"{shape} (ours)", [row.get(k) for k in _CPU_PARTS], budget))
    for label, parts, budget in rows:
        known = [p for p in parts if p is not None]
        cells = " | ".join("" if p is None else f"{p:.2f}" for p in parts)
        given = "" if budget is None else f"{budget:.2f}"
        lines.append(f"| {label} | {cells} | {sum(known):.2f} | {given} |")
    return [*lines, ""]


def _projector_table(outcome: dict[str, Any], title: str = "## Projector") -> list[str]:
    lines = [
        title,
        "",
        f"The log holds {outcome['log_events']:,} events; each run starts from nothing. CPU "
        "per event read: the run's projector processes (start-up included) and their "
        "PostgreSQL sessions.",
        "",
        "| run | events read | seconds | events/s | peak RSS MB | projector CPU µs/event "
        "| PostgreSQL CPU µs/event |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    rebuild = [outcome["rebuild"]] if outcome.get("rebuild") else []
    for run in [*outcome["catch_up"], *rebuild]:
        cpu = [run.get(f"{part}_cpu_us_per_event") for part in ("projector", "postgres")]
        lines.append(
            f"| {run['run']} | {run['events']:,} | {run['seconds']:.1f} "
            f"| {run['events_per_s']:,.0f} | {run['peak_rss_mb']:.0f} | "
            + " | ".join("" if us is None else f"{us:.0f}" for us in cpu)
            + " |"
        )
    return [*lines, "", *projector_target(outcome), *_projector_budget(outcome)]


def _projector_budget(outcome: dict[str, Any]) -> list[str]:
    """What "all seven" costs per event beside what the cores give one at its target: one
    process runs its Python on one core at most, and shares the machine with PostgreSQL."""
    one = {r["run"]: r for r in outcome["catch_up"]}.get(PROJECTOR_TARGET_RUN)
    if one is None or one.get("postgres_cpu_us_per_event") is None:
        return []
    grown = outcome["log_events"] >= GROWN_LOG_EVENTS
    target = PROJECTOR_TARGET_EVENTS_S if grown else DEMO_LOG_TARGET_EVENTS_S
    cores = os.cpu_count() or 1
    python, postgres = one["projector_cpu_us_per_event"], one["postgres_cpu_us_per_event"]
    return [
        f"CPU per event, {PROJECTOR_TARGET_RUN}: the projector {python:.0f} µs and PostgreSQL "
        f"{postgres:.0f} µs, {python + postgres:.0f} µs in all. At {target:,.0f} events/s one "
        f"process's core gives {1e6 / target:.0f} µs per event and the machine's {cores} "
        f"cores {cores * 1e6 / target:.0f} µs to both.",
        "",
    ]


# The relay's catch-up target (issue: a polling outbox relay does ~14.5k events/s untuned).
RELAY_TARGET_EVENTS_S = 10_000


def _relay_table(outcome: dict[str, Any]) -> list[str]:
    """The NATS relay's catch-up (events/s, target >= 10,000), or why it did not run."""
    if "skipped" in outcome:
        return ["## NATS relay", "", f"Not measured: {outcome['skipped']}.", ""]
    return [
        "## NATS relay",
        "",
        "`cqrs projector run --only nats:events` from the origin into a fresh stream (process "
        "start included), every event acknowledged by JetStream.",
        "",
        "| events | seconds | events/s | events per CPU-second |",
        "| ---: | ---: | ---: | ---: |",
        f"| {outcome['events']:,} | {outcome['seconds']:.2f} | {outcome['events_per_s']:,.0f} "
        f"| {outcome['events_per_cpu_s']:,.0f} |",
        "",
        f"Target >= {RELAY_TARGET_EVENTS_S:,} events/s: "
        f"{_verdict(outcome['events_per_s'], RELAY_TARGET_EVENTS_S, ' events/s')}",
        "",
    ]


def _freshness_table(outcome: dict[str, Any]) -> list[str]:
    lines = [
        "## Freshness (command reply -> visible in the source)",
        "",
        "| rate | achieved | source | samples | p50 ms | p99 ms | max ms |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: |",
    ]
    for rate, run in outcome.items():
        for source, s in run["sources"].items():
            lines.append(
                f"| {rate} | {run['rate_achieved']:,.0f}/s | {source} | {s['samples']} "
                f"| {s['p50_ms']:.1f} | {s['p99_ms']:.1f} | {s['max_ms']:.1f} |"
            )
    return [*lines, ""]


def watch_table(outcomes: dict[str, Any]) -> list[str]:
    """The watch group (bench/watch.py): idle streams' memory, active streams' delivery."""
    lines = ["## Watch streams", ""]
    idle = outcomes.get("watch-idle")
    if idle is not None:
        growth = idle["rss_growth_mb"]
        shown = "n/a" if growth is None else f"{growth:,.0f} MB"
        verdict = (
            "not measured (no metrics port)"
            if growth is None
            else _at_most(growth, IDLE_RSS_TARGET_MB, " MB")
        )
        floor = idle.get("floor_growth_mb")
        lines += [
            f"Idle: {idle['opened']:,} of {idle['streams']:,} streams open (in "
            f"{idle['open_s']:.1f} s); read server RSS {idle['rss_before_mb'] or 0:,.0f} MB "
            f"-> {idle['rss_with_streams_mb'] or 0:,.0f} MB (+{shown}); a bare grpc server "
            f"holding as many (`bench/watch_floor.py`): +{floor or 0:,.0f} MB. "
            f"Target <= {IDLE_RSS_TARGET_MB} MB: {verdict}.",
            "",
        ]
    active = outcomes.get("watch-active")
    if active is not None:
        lines += [
            "| streams | updates/s | delivered | missing | p50 ms | p99 ms | max ms |",
            "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
            f"| {active['streams']:,} | {active['rate_achieved']:,.0f} | {active['delivered']:,} "
            f"| {active['missing']} | {active['p50_ms']:.1f} | {active['p99_ms']:.1f} "
            f"| {active['max_ms']:.1f} |",
            "",
            "Command reply -> its state on the stream (the projector's apply included). Target "
            f"p99 <= {ACTIVE_P99_TARGET_MS:g} ms after the projection applied it: "
            f"{_at_most(active['p99_ms'], ACTIVE_P99_TARGET_MS, ' ms')}.",
            "",
        ]
    return lines


def as_of_table(outcome: dict[str, Any]) -> list[str]:
    """The as-of scenario (bench/as_of.py)."""
    lines = [
        f"## Time travel (`GetProductAsOf` on a {outcome['events']:,}-event product, a snapshot "
        f"every {outcome['snapshot_every']} events)",
        "",
        "| how | calls | p50 ms | p99 ms | max ms |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for how, row in outcome.items():
        if isinstance(row, dict):
            lines.append(
                f"| {how.replace('_', ' ')} | {row['calls']} | {row['p50_ms']:.1f} "
                f"| {row['p99_ms']:.1f} | {row['max_ms']:.1f} |"
            )
    p99 = outcome["with_snapshots"]["p99_ms"]
    return [
        *lines,
        "",
        f"Target p99 <= {AS_OF_TARGET_MS:g} ms: {_at_most(p99, AS_OF_TARGET_MS, ' ms')}.",
        "",
    ]


def _scale_out_table(outcome: dict[str, Any]) -> list[str]:
    lines = [
        f"## Scale-out (`{outcome['scenario']}`, read server `--workers N`)",
        "",
        "| workers | rps | p50 ms | p99 ms | errors |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, row in outcome["runs"].items():
        lines.append(
            f"| {name.split()[-1]} | {row['rps']:,.0f} | {row['p50_ms']:.2f} "
            f"| {row['p99_ms']:.2f} | {row['errors']} |"
        )
    return [*lines, "", f"Ratio: {outcome['ratio']:.2f}x.", ""]


# Reads on a Redis Cluster within this of one Redis (issue 24).
CLUSTER_TARGET = 0.8


def cluster_tables(outcome: dict[str, Any]) -> list[str]:
    """The cluster group (bench/cluster.py): projector and reads, one Redis beside a cluster."""
    title = "## Redis Cluster (three masters) beside one Redis"
    if "skipped" in outcome:
        return [title, "", f"Not measured: {outcome['skipped']}.", ""]
    lines = [
        title,
        "",
        "Catch-up of the three Redis projections from zero:",
        "",
        "| run | one Redis events/s | cluster events/s | cluster x |",
        "| --- | ---: | ---: | ---: |",
    ]
    single, on_cluster = outcome["projector"]["one Redis"], outcome["projector"]["cluster"]
    for a, b in zip(single, on_cluster, strict=True):
        ratio = b["events_per_s"] / a["events_per_s"] if a["events_per_s"] else 0.0
        lines.append(
            f"| {a['run']} | {a['events_per_s']:,.0f} | {b['events_per_s']:,.0f} | {ratio:.2f} |"
        )
    reads = outcome["reads"]
    # The cluster, and the cluster with every projection spread over its masters (when run).
    layouts = [("cluster", outcome["ratios"])]
    if "cluster, spread" in reads:
        layouts.append(("cluster, spread", outcome.get("spread_ratios", {})))
    header = "| scenario | one Redis rps | p99 ms |"
    rule = "| --- | ---: | ---: |"
    for where, _ in layouts:
        header += f" {where} rps | p99 ms | {where} x |"
        rule += " ---: | ---: | ---: |"
    lines += [
        "",
        "Reads from the projection, a read server of one worker each, near-cache off (every "
        "read reaches Redis); spread: each projection in three keyspaces, one per master (a "
        "get reads one, a list merges three):",
        "",
        header,
        rule,
    ]
    ratios: list[float] = []
    for name, row in reads["one Redis"].items():
        cells = [f"{row['rps']:,.0f}", f"{row['p99_ms']:.2f}"]
        for where, by_name in layouts:
            other, ratio = reads[where].get(name), by_name.get(name)
            cells += [
                "" if other is None else f"{other['rps']:,.0f}",
                "" if other is None else f"{other['p99_ms']:.2f}",
                "" if ratio is None else f"{ratio:.2f}",
            ]
            if ratio is not None:
                ratios.append(ratio)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if not ratios:
        verdict = "not measured"
    else:
        lowest = min(ratios)
        verdict = f"{lowest:.2f}x ({'met' if lowest >= CLUSTER_TARGET else 'missed'})"
    return [
        *lines,
        "",
        f"Target: every read on the cluster >= {CLUSTER_TARGET}x one Redis; lowest: {verdict}",
        "",
    ]


def outbound_table(outcomes: dict[str, Any]) -> list[str]:
    """Webhook deliveries and payment captures against 50 ms receivers, and the targets
    (nothing when neither ran)."""
    webhooks, payments = outcomes.get("webhooks"), outcomes.get("payments")
    if webhooks is None and payments is None:
        return []
    lines = [
        "## Outbound: webhooks and payments",
        "",
        "Receivers and the payments sandbox answer after 50 ms; each scenario runs a write "
        "server and `cqrs projector run --only ...` of its own on a scratch database, every "
        "setting at its default.",
        "",
        "| scenario | load | achieved | p50 ms | p99 ms | max ms | target |",
        "| --- | --- | ---: | ---: | ---: | ---: | --- |",
    ]
    if webhooks is not None:
        rate = f"{webhooks['rate']:,.0f} events/s for {webhooks['seconds']:g} s"
        alone, beside = webhooks["alone"], webhooks["beside_slow_and_dead"]
        delay_s = webhooks["delay_p99_ms"] / 1000
        lines += [
            f"| webhooks: one subscription (lag) | {rate} "
            f"| {alone['delivered_per_s']:,.0f}/s | {_lag(alone)} "
            f"| >= 500/s, lag < 2 s, none missing: {_met(webhooks['keeps_up'])} |",
            f"| webhooks: beside a slow (3 s) and a dead receiver (lag) | {rate} "
            f"| {beside['delivered_per_s']:,.0f}/s | {_lag(beside)} "
            f"| delayed {delay_s:+.2f} s at p99 (<= 1 s): {_met(webhooks['isolated'])} |",
        ]
    if payments is not None:
        paid = payments["captured"] == payments["orders"]
        fast = payments["captures_per_s"] >= TARGET_CAPTURES_S
        lines.append(
            f"| payments (confirm to capture) | {payments['orders']:,} orders confirmed at once "
            f"| {payments['captures_per_s']:,.0f} captures/s | {payments['capture_p50_ms']:,.0f} "
            f"| {payments['capture_p99_ms']:,.0f} | {payments['capture_max_ms']:,.0f} "
            f"| >= {TARGET_CAPTURES_S:g} captures/s, all captured: {_met(paid and fast)} |"
        )
    return [*lines, ""]


def _lag(phase: dict[str, Any]) -> str:
    return f"{phase['lag_p50_ms']:,.0f} | {phase['lag_p99_ms']:,.0f} | {phase['lag_max_ms']:,.0f}"


def _met(ok: bool) -> str:
    return "met" if ok else "missed"


def analytics_tables(rpc: dict[str, dict[str, Any]], outcomes: dict[str, Any]) -> list[str]:
    """Each analytics RPC from the read model and from the write model, the ratio and the
    targets; the analytics group's projector runs (on the grown log)."""
    by_shape: dict[str, dict[str, dict[str, Any]]] = {}
    for row in rpc.values():
        if row["group"] == "analytics":
            by_shape.setdefault(row["shape"], {})[row["source"]] = row
    lines: list[str] = []
    if by_shape:
        lines += ["## Analytics: read model vs write model", ""]
        dataset = outcomes.get("analytics-dataset")
        if dataset:
            lines += [
                f"The database holds {dataset['orders']:,} orders ({dataset['order_items']:,} "
                f"lines) of {dataset['customers']:,} customers and {dataset['products']:,} "
                f"products over {dataset['months']} months in {dataset['currencies']} "
                f"currencies; {dataset['events']:,} events in the log.",
                "",
            ]
        lines += [
            "| RPC | read model rps | write model rps | read model p50 ms | read model p99 ms "
            "| write model p50 ms | write model p99 ms | errors | read model x write model |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        ratios: dict[str, float | None] = {}
        for shape, method, _ in ANALYTICS_CALLS:
            rows = by_shape.get(shape)
            if not rows:
                continue
            read, write = (rows.get(source) for source in ANALYTICS_SOURCES)
            errors = sum(r["errors"] for r in rows.values())
            # A side with failed calls measured something else: no ratio then.
            ratio = (
                read["rps"] / write["rps"]
                if read and write and write["rps"] and not errors
                else None
            )
            ratios[shape] = ratio
            shown = "(failed calls)" if errors else "" if ratio is None else f"{ratio:,.1f}x"
            lines.append(
                f"| {method} | {_rps(read)} | {_rps(write)} | {_latency(read)} "
                f"| {_latency(write)} | {errors} | {shown} |"
            )
        names = {shape: method for shape, method, _ in ANALYTICS_CALLS}
        verdicts = [
            f"{names[shape]} {_verdict(ratios[shape], ANALYTICS_RATIO_TARGET, 'x')}"
            for shape in ANALYTICS_RATIO_SHAPES
            if shape in ratios
        ]
        if verdicts:
            target = f"{ANALYTICS_RATIO_TARGET:g}"
            lines += [
                "",
                f"Target (read model >= {target}x the write model): " + "; ".join(verdicts) + ".",
            ]
        lines.append("")
    if "analytics-projector" in outcomes:
        outcome = outcomes["analytics-projector"]
        lines += _projector_table(outcome, "## Projector with the analytics (on the grown log)")
    return lines


def projector_target(outcome: dict[str, Any]) -> list[str]:
    """The projector's targets, from this run: all seven consumers in one process (>= 10,000
    events/s on the grown log, 12,000 on the demo log), the rebuild of everything (>= 15,000)
    and two processes sharing them (>= 1.3x one); nothing if ``outcome`` has none of these."""
    runs = {r["run"]: r for r in outcome["catch_up"]}
    figures = []
    one = runs.get(PROJECTOR_TARGET_RUN)
    if one is not None:
        grown = outcome["log_events"] >= GROWN_LOG_EVENTS
        target = PROJECTOR_TARGET_EVENTS_S if grown else DEMO_LOG_TARGET_EVENTS_S
        figures.append(
            f"{PROJECTOR_TARGET_RUN} {_verdict(one['events_per_s'], target, ' events/s')}"
        )
    if ANALYTICS in runs:
        figures.append(f"{ANALYTICS} alone {runs[ANALYTICS]['events_per_s']:,.0f} events/s")
    rebuilt = outcome.get("rebuild")
    if rebuilt:
        rate = rebuilt["events_per_s"]
        figures.append(f"rebuild {_verdict(rate, REBUILD_TARGET_EVENTS_S, ' events/s')}")
    two = runs.get(TWO_PROCESSES_RUN)
    if one is not None and two is not None and one["events_per_s"]:
        ratio = two["events_per_s"] / one["events_per_s"]
        figures.append(f"two processes {_verdict(ratio, TWO_PROCESSES_TARGET_X, 'x')} one")
    following, split = runs.get(FOLLOWING_RUN), runs.get(SEGMENTS_RUN)
    if following is not None and split is not None and following["events_per_s"]:
        ratio = split["events_per_s"] / following["events_per_s"]
        figures.append(
            f"following: two processes, two segments "
            f"{_verdict(ratio, TWO_PROCESSES_TARGET_X, 'x')} one"
        )
    if not figures:
        return []
    return [
        f"Targets (all seven >= {PROJECTOR_TARGET_EVENTS_S:,.0f} events/s on the grown log, "
        f">= {DEMO_LOG_TARGET_EVENTS_S:,.0f} on the demo log; rebuild >= "
        f"{REBUILD_TARGET_EVENTS_S:,.0f}; two processes >= {TWO_PROCESSES_TARGET_X}x one): "
        + "; ".join(figures)
        + ".",
        "",
    ]


def _rps(row: dict[str, Any] | None) -> str:
    return "" if row is None else f"{row['rps']:,.1f}"


def _latency(row: dict[str, Any] | None) -> str:
    return " | " if row is None else f"{row['p50_ms']:.2f} | {row['p99_ms']:.2f}"


def _verdict(value: float | None, target: float, unit: str) -> str:
    if value is None:
        return "not measured"
    figure = f"{value:,.1f}{unit}" if unit == "x" else f"{value:,.0f}{unit}"
    return f"{figure} ({'met' if value >= target else 'missed'})"


def _at_most(value: float, target: float, unit: str) -> str:
    return f"{value:,.1f}{unit} ({'met' if value <= target else 'missed'})"


def _chart(rpc: dict[str, dict[str, Any]], path: Path) -> None:
    """Grouped bars: every read RPC, one bar per source (requests per second)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shapes: dict[str, dict[str, float]] = {}
    for row in rpc.values():
        if row["group"] == "reads":
            shapes.setdefault(row["shape"], {})[row["source"]] = row["rps"]
    names = list(shapes)
    width = 0.27
    figure, axes = plt.subplots(figsize=(12, 5))
    for i, source in enumerate(SOURCES):
        values = [shapes[n].get(source, 0.0) for n in names]
        positions = [x + (i - 1) * width for x in range(len(names))]
        axes.bar(positions, values, width, label=source.replace("_", " "))
    floor = rpc.get("floor", {}).get("rps")
    if floor:
        axes.axhline(floor, color="grey", linestyle="--", linewidth=1, label="floor (health check)")
    axes.set_xticks(range(len(names)), [n.replace("_", "\n") for n in names])
    axes.set_ylabel("requests / s")
    axes.set_title("Reads by source")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
