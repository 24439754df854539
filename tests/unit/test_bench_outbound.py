"""The outbound benchmark group (webhooks and payments): its selection, where it runs, and
its summary table with the targets of issue 21."""

from __future__ import annotations

from typing import Any

from bench import run as bench_run
from bench import summary
from bench.catalogue import GROUPS, select


def test_the_outbound_group_runs_before_the_analytics() -> None:
    assert select(["outbound"]) == ["webhooks", "payments"]
    assert select(["payments"]) == ["payments"]
    assert GROUPS.index("outbound") == len(GROUPS) - 2  # analytics still last
    everything = select([])
    assert everything.index("payments") == everything.index("webhooks") + 1
    assert everything.index("payments") < everything.index("analytics-projector")
    assert bench_run.group_of("webhooks") == bench_run.group_of("payments") == "outbound"


def _phase(per_s: float, p99_ms: float, missing: int = 0) -> dict[str, Any]:
    return {
        "delivered_per_s": per_s,
        "missing": missing,
        "lag_p50_ms": p99_ms / 4,
        "lag_p99_ms": p99_ms,
        "lag_max_ms": p99_ms + 10,
    }


def test_the_summary_shows_the_figures_and_the_targets() -> None:
    outcomes = {
        "webhooks": {
            "rate": 500.0,
            "seconds": 8.0,
            "alone": _phase(497.0, 120.0),
            "beside_slow_and_dead": _phase(470.0, 1320.0),
            "delay_p99_ms": 1200.0,
            "keeps_up": True,
            "isolated": False,
        },
        "payments": {
            "orders": 1200,
            "captured": 1200,
            "captures_per_s": 360.4,
            "capture_p50_ms": 1330.6,
            "capture_p99_ms": 2001.4,
            "capture_max_ms": 2088.4,
        },
    }
    lines = summary.outbound_table(outcomes)
    assert lines[0] == "## Outbound: webhooks and payments"
    rows = [line for line in lines if line.startswith("| webhooks") or line.startswith("| pay")]
    assert rows == [
        "| webhooks: one subscription (lag) | 500 events/s for 8 s | 497/s | 30 | 120 | 130 "
        "| >= 500/s, lag < 2 s, none missing: met |",
        "| webhooks: beside a slow (3 s) and a dead receiver (lag) | 500 events/s for 8 s "
        "| 470/s | 330 | 1,320 | 1,330 | delayed +1.20 s at p99 (<= 1 s): missed |",
        "| payments (confirm to capture) | 1,200 orders confirmed at once | 360 captures/s "
        "| 1,331 | 2,001 | 2,088 | >= 100 captures/s, all captured: met |",
    ]
    assert summary.outbound_table({"projector": {}}) == []
    partial = {"payments": {**outcomes["payments"], "captured": 1100}}
    assert summary.outbound_table(partial)[-2].endswith("all captured: missed |")
