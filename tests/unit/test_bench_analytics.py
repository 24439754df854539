"""The analytics benchmark: its scenarios, their request data, the seeding it asks for and
the summary's read model vs write model table."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import descriptor_pool, json_format, message_factory

from bench import data, summary
from bench import run as bench_run
from bench.catalogue import GROUPS, OTHER_SCENARIOS, RPC_SCENARIOS, RpcScenario, select
from bench.projector import ANALYTICS_RUNS, RUNS, events_read

# The request and response types must be in the default descriptor pool.
from common.pb.shop.v1 import query_service_pb2  # noqa: F401

ANALYTICS = [s for s in RPC_SCENARIOS.values() if s.group == "analytics"]


def test_one_scenario_per_analytics_rpc_and_source() -> None:
    assert sorted(s.name for s in ANALYTICS) == sorted(
        f"{shape}_{source}"
        for shape in (
            "customer_stats", "product_sales", "top_products", "top_customers", "monthly_revenue"
        )
        for source in ("read_model", "write_model")
    )  # fmt: skip
    service = descriptor_pool.Default().FindServiceByName("shop.v1.QueryService")
    methods = {m.name for m in service.methods}
    for scenario in ANALYTICS:
        assert scenario.server == "read" and scenario.call.rpartition(".")[2] in methods
        assert scenario.shape == scenario.name.removesuffix(f"_{scenario.source}")
        assert scenario.ghz_config()["data-file"] == f"bench/data/{scenario.name}.json"


def test_the_analytics_group_runs_last() -> None:
    assert GROUPS[-1] == "analytics"
    chosen = select(["analytics"])
    assert chosen == [*(s.name for s in ANALYTICS), "analytics-projector"]
    # read model and write model of one RPC side by side
    assert chosen[:2] == ["customer_stats_read_model", "customer_stats_write_model"]
    assert {s.concurrency for s in ANALYTICS} == {16}
    everything = select([])
    assert everything[-len(chosen) :] == chosen
    assert select(["analytics-projector"]) == ["analytics-projector"]
    assert select(["monthly_revenue_write_model", "projector"]) == [
        "monthly_revenue_write_model",
        "projector",
        "relay",  # the projector group: the NATS relay's catch-up too
    ]
    assert bench_run.group_of("analytics-projector") == "analytics"
    assert bench_run.group_of("top_products_read_model") == "analytics"
    assert bench_run.group_of("projector") == "projector"
    assert set(OTHER_SCENARIOS) == {
        "pg-limit", "projector", "relay", "freshness", "watch-idle", "watch-active", "as-of",
        "scale-out", "cluster", "webhooks", "payments", "analytics-projector",
    }  # fmt: skip


def _requests(tmp_path: Path, scenarios: list[RpcScenario]) -> dict[str, list[dict[str, Any]]]:
    ids = {
        "products": ["00000000-0000-4000-8000-000000000001"],
        "customers": ["00000000-0000-4000-8000-000000000002"],
        "orders": ["00000000-0000-4000-8000-000000000003"],
        "ordering_customers": ["00000000-0000-4000-8000-000000000004"],
        "sold_products": ["00000000-0000-4000-8000-000000000005"],
        "months": data.month_range("2024-12", "2026-11"),
    }
    written = data.write_requests(tmp_path, random.Random(1), ids, ["books"], 6, scenarios)
    assert [p.name for p in written] == [f"{s.name}.json" for s in scenarios]
    return {p.stem: json.loads(p.read_text()) for p in written}


def test_analytics_requests_are_valid_and_ask_about_data_with_orders(tmp_path: Path) -> None:
    requests = _requests(tmp_path, ANALYTICS)
    for scenario in ANALYTICS:
        method = descriptor_pool.Default().FindMethodByName(scenario.call)
        request_class = message_factory.GetMessageClass(method.input_type)
        expected_source = {"read_model": "SOURCE_READ_MODEL", "write_model": "SOURCE_WRITE_MODEL"}
        for entry in requests[scenario.name]:
            json_format.ParseDict(entry, request_class())  # every field exists, every value fits
            assert entry["source"] == expected_source[scenario.source]
    assert {r["customer_id"] for r in requests["customer_stats_read_model"]} == {
        "00000000-0000-4000-8000-000000000004"
    }
    assert {r["product_id"] for r in requests["product_sales_write_model"]} == {
        "00000000-0000-4000-8000-000000000005"
    }
    by = [r["by"] for r in requests["top_products_read_model"]]
    assert by == ["TOP_PRODUCTS_BY_REVENUE", "TOP_PRODUCTS_BY_UNITS"] * 3
    assert all(r["limit"] == 10 for r in requests["top_customers_write_model"])
    months = requests["monthly_revenue_read_model"][0]
    assert (months["from_month"], months["to_month"]) == ("2024-12", "2026-11")


def test_month_range() -> None:
    assert data.month_range("2025-11", "2026-02") == ["2025-11", "2025-12", "2026-01", "2026-02"]
    assert data.month_range("2026-03", "2026-03") == ["2026-03"]
    long = data.month_range("2000-01", "2026-12")
    assert len(long) == data.MAX_MONTHS and long[0] == "2017-01" and long[-1] == "2026-12"


def test_the_analytics_seed_adds_enough_orders_over_past_months() -> None:
    flags = _flags(bench_run.analytics_seed_args(90_000))
    assert int(flags["--customers"]) * int(flags["--orders-per-customer"]) >= 90_000
    assert flags["--products"] == "4500" and flags["--months"] == "24"
    assert 0 < float(flags["--usd-share"]) < 1
    tiny = _flags(bench_run.analytics_seed_args(7))
    assert tiny["--products"] == "50" and tiny["--customers"] == "2"
    assert _flags(bench_run.analytics_seed_args(10**7))["--products"] == "5000"


def _flags(args: list[str]) -> dict[str, str]:
    return dict(zip(args[::2], args[1::2], strict=True))


def test_projector_runs_with_the_analytics_consumer() -> None:
    assert RUNS["pg:analytics"] == ["pg:analytics"]
    assert len(RUNS["all seven"]) == 7 and set(RUNS["all six"]) < set(RUNS["all seven"])
    assert ANALYTICS_RUNS == ["pg:analytics", "all seven"]
    counts = {"Product": 10, "Customer": 20, "Order": 30}
    assert events_read(counts, ["pg:analytics"]) == 60
    assert events_read(counts, RUNS["all seven"]) == 60
    assert events_read(counts, ["redis:orders"]) == 50


def _row(scenario: str, rps: float, p50: float = 1.0, p99: float = 2.0) -> dict[str, Any]:
    s = RPC_SCENARIOS[scenario]
    report = {
        "count": int(rps * 8),
        "rps": rps,
        "latencyDistribution": [
            {"percentage": 50, "latency": int(p50 * 1e6)},
            {"percentage": 95, "latency": int(p99 * 1e6)},
            {"percentage": 99, "latency": int(p99 * 1e6)},
        ],
        "statusCodeDistribution": {"OK": int(rps * 8)},
        "options": {"driver": "builtin", "concurrency": 50},
    }
    return summary.rpc_row(s, report)


def _projector(runs: dict[str, float], rebuild: bool) -> dict[str, Any]:
    def run(name: str, rate: float) -> dict[str, Any]:
        return {"run": name, "events": 1000, "seconds": 1000 / rate, "events_per_s": rate,
                "peak_rss_mb": 60.0}  # fmt: skip

    return {
        "log_events": 1000,
        "catch_up": [run(n, r) for n, r in runs.items()],
        "rebuild": run("rebuild (all seven)", 5000.0) if rebuild else None,
    }


def test_the_summary_compares_read_model_and_write_model(tmp_path: Path) -> None:
    rpc = {
        name: row
        for name, row in (
            ("floor", _row("floor", 2000.0)),
            ("monthly_revenue_read_model", _row("monthly_revenue_read_model", 1500.0, 20, 40)),
            ("monthly_revenue_write_model", _row("monthly_revenue_write_model", 5.0, 900, 1500)),
            ("top_products_read_model", _row("top_products_read_model", 1200.0)),
            ("top_products_write_model", _row("top_products_write_model", 30.0)),
            ("customer_stats_read_model", _row("customer_stats_read_model", 1000.0)),
            ("top_customers_read_model", _row("top_customers_read_model", 900.0)),
            ("top_customers_write_model", _row("top_customers_write_model", 40.0)),
        )
    }
    rpc["top_customers_write_model"]["errors"] = 3
    outcomes: dict[str, Any] = {
        **rpc,
        "analytics-dataset": {
            "orders": 100_000, "order_items": 300_000, "customers": 18_000, "products": 4_500,
            "months": 24, "currencies": 2, "events": 480_000, "seeded": 90_000,
            "caught_up_s": 60.0,
        },
        "analytics-projector": _projector({"pg:analytics": 7000.0, "all seven": 12_000.0}, False),
    }  # fmt: skip
    machine = {k: "x" for k in ("cpu", "memory", "system", "python", "postgresql", "redis")}
    text = summary.write(tmp_path, outcomes, machine, "cqrs bench analytics")
    assert (tmp_path / "summary.md").read_text() == text
    assert "## Analytics: read model vs write model" in text
    assert "100,000 orders (300,000 lines)" in text and "over 24 months in 2 currencies" in text
    assert (
        "| GetMonthlyRevenue | 1,500.0 | 5.0 | 20.00 | 40.00 | 900.00 | 1500.00 | 0 | 300.0x |"
        in text
    )
    assert "| ListTopProducts | 1,200.0 | 30.0 |" in text and "| 40.0x |" in text
    assert "| GetCustomerStats | 1,000.0 |  |" in text  # no write model run: no ratio
    assert "| ListTopCustomers | 900.0 | 40.0 |" in text and "| 3 | (failed calls) |" in text
    assert "GetMonthlyRevenue 300.0x (met); ListTopProducts 40.0x (missed)" in text
    assert "## Projector with the analytics (on the grown log)" in text
    assert "| pg:analytics | 1,000 | 0.1 | 7,000 | 60 |" in text
    assert "all seven 12,000 events/s (met); pg:analytics alone 7,000 events/s" in text
    assert "| rebuild" not in text.split("## Projector with the analytics")[1]  # no such run
    assert not (tmp_path / "chart.png").exists()  # the chart is of the reads group only


@pytest.mark.parametrize(
    ("log_events", "rate", "verdict"),
    [
        (470_000, 9_999.0, "missed"),
        (470_000, 10_000.0, "met"),
        (134_000, 10_000.0, "missed"),
        (134_000, 12_000.0, "met"),
    ],
)
def test_the_projector_targets(log_events: int, rate: float, verdict: str) -> None:
    outcome = _projector({"all seven": rate, "all seven, 2 processes": rate * 1.3}, True)
    outcome["log_events"] = log_events
    (line, _) = summary.projector_target(outcome)
    assert f"all seven {rate:,.0f} events/s ({verdict})" in line
    assert "rebuild 5,000 events/s (missed)" in line  # >= 15,000
    assert "two processes 1.3x (met) one" in line
    assert summary.projector_target(_projector({"all six": 20_000.0}, False)) == []


def test_the_projector_table_shows_each_run_s_cpu_beside_what_the_cores_give(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(summary.os, "cpu_count", lambda: 2)
    outcome = _projector({"all seven": 5_000.0, "all six": 6_000.0}, False)
    outcome["log_events"] = 134_000
    seven, six = outcome["catch_up"]
    seven.update(projector_cpu_us_per_event=140.4, postgres_cpu_us_per_event=93.6)
    six.update(projector_cpu_us_per_event=120.0, postgres_cpu_us_per_event=None)
    lines = summary._projector_table(outcome)
    assert "| all seven | 1,000 | 0.2 | 5,000 | 60 | 140 | 94 |" in lines
    assert "| all six | 1,000 | 0.2 | 6,000 | 60 | 120 |  |" in lines  # not measured
    budget = next(line for line in lines if line.startswith("CPU per event"))
    # 140 + 94 = 234 µs; at 12,000 events/s a core gives 83 µs, two cores 167.
    assert "the projector 140 µs and PostgreSQL 94 µs, 234 µs in all" in budget
    assert "one process's core gives 83 µs per event and the machine's 2 cores 167 µs" in budget
    # Results from before the CPU was measured: the table without figures, no budget line.
    old = _projector({"all seven": 5_000.0}, False)
    assert not any(line.startswith("CPU per event") for line in summary._projector_table(old))
