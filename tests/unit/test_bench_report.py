"""The benchmark's reports have ghz's JSON shape; the committed ghz configs are current."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from bench import report, summary
from bench.catalogue import GHZ_DIR, ROOT, RPC_SCENARIOS, select
from bench.drivers import h2load
from bench.report import Calls


def a_report(latencies_ms: list[float], errors: int = 0) -> dict[str, object]:
    calls = Calls(
        ok_latencies_ns=[int(ms * 1e6) for ms in latencies_ms],
        statuses=Counter({"OK": len(latencies_ms), **({"UNAVAILABLE": errors} if errors else {})}),
        errors=Counter({"UNAVAILABLE: down": errors} if errors else {}),
        total_ns=2_000_000_000,
    )
    return report.build("get_product_projection", calls, {"concurrency": 5})


def test_a_report_has_ghz_shape() -> None:
    built = a_report([float(n) for n in range(1, 101)], errors=3)
    assert report.problems(built) == []
    assert built["count"] == 103
    assert built["rps"] == pytest.approx(103 / 2)
    assert built["fastest"] == 1_000_000 and built["slowest"] == 100_000_000
    assert built["average"] == 50_500_000  # successful calls only, as ghz does
    assert [d["latency"] for d in built["latencyDistribution"]] == [
        ms * 1_000_000 for ms in (10, 25, 50, 75, 90, 95, 99)
    ]
    assert built["statusCodeDistribution"] == {"OK": 100, "UNAVAILABLE": 3}
    assert sum(b["count"] for b in built["histogram"]) == 100
    assert json.loads(json.dumps(built)) == built  # plain JSON


def test_an_empty_run_is_still_a_report() -> None:
    assert report.problems(a_report([])) == []


@pytest.mark.parametrize(
    ("key", "value", "complaint"),
    [
        ("total", 1.5, "total"),
        ("date", "yesterday", "RFC 3339"),
        ("latencyDistribution", [{"percentage": 50, "latency": 1}], "percentages"),
        ("statusCodeDistribution", {"OK": 1}, "add up"),
    ],
)
def test_departures_from_the_format_are_found(key: str, value: object, complaint: str) -> None:
    broken = {**a_report([1.0, 2.0]), key: value}
    assert any(complaint in p for p in report.problems(broken))


def test_committed_ghz_configs_match_the_catalogue(tmp_path: object) -> None:
    """`cqrs bench configs` regenerates bench/ghz; a stale committed config fails here."""
    committed = {p.name: json.loads(p.read_text()) for p in GHZ_DIR.glob("*.json")}
    expected = {f"{name}.json": s.ghz_config() for name, s in RPC_SCENARIOS.items()}
    assert committed == expected
    for config in expected.values():
        assert (ROOT / str(config["proto"])).is_file()
        assert config["data-file"] == f"bench/data/{config['name']}.json"
        assert config["call"].count(".") >= 2  # package.Service.Method


def test_scenario_selection() -> None:
    assert select(["floor"]) == ["floor"]
    reads = select(["reads"])
    assert len(reads) == 24 and all("_" in r for r in reads)
    assert select(["projector", "floor", "projector"]) == ["projector", "relay", "floor"]
    everything = select([])
    assert everything[0] == "floor" and everything[-1] == "analytics-projector"
    with pytest.raises(ValueError, match="unknown scenario"):
        select(["nope"])


def test_h2load_log_and_frames() -> None:
    log = "1700000000000000\t200\t1500\n1700000000000100\t200\t2500\n1700000000000200\t503\t10\n"
    calls = h2load._from_log(log)
    assert calls.ok_latencies_ns == [1_500_000, 2_500_000]
    assert calls.errors == Counter({"HTTP 503": 1})
    assert h2load.grpc_frame(b"\x0a\x01x") == b"\x00\x00\x00\x00\x03\x0a\x01x"


def _cluster_outcome(single_rps: float, cluster_rps: float) -> dict[str, object]:
    def row(rps: float) -> dict[str, float]:
        return {"rps": rps, "p99_ms": 2.0}

    def runs(events_per_s: float) -> list[dict[str, object]]:
        return [{"run": "redis (3)", "events_per_s": events_per_s}]

    return {
        "projector": {"one Redis": runs(20_000), "cluster": runs(15_000)},
        "reads": {
            "one Redis": {"get_product_projection": row(single_rps)},
            "cluster": {"get_product_projection": row(cluster_rps)},
        },
        "ratios": {"get_product_projection": cluster_rps / single_rps},
    }


def test_the_cluster_table_judges_the_lowest_ratio() -> None:
    met = "\n".join(summary.cluster_tables(_cluster_outcome(5_000, 4_500)))
    assert "| redis (3) | 20,000 | 15,000 | 0.75 |" in met
    assert "| get_product_projection | 5,000 | 2.00 | 4,500 | 2.00 | 0.90 |" in met
    assert met.endswith("lowest: 0.90x (met)\n")
    missed = "\n".join(summary.cluster_tables(_cluster_outcome(5_000, 3_000)))
    assert "lowest: 0.60x (missed)" in missed
    spread = _cluster_outcome(5_000, 4_500)
    spread["reads"]["cluster, spread"] = {"get_product_projection": {"rps": 3_500, "p99_ms": 3.0}}  # type: ignore[index]
    spread["spread_ratios"] = {"get_product_projection": 0.7}
    both = "\n".join(summary.cluster_tables(spread))
    assert (
        "| get_product_projection | 5,000 | 2.00 | 4,500 | 2.00 | 0.90 | 3,500 | 3.00 | 0.70 |"
        in both
    )
    assert "lowest: 0.70x (missed)" in both
    skipped = summary.cluster_tables({"skipped": "redis-server or redis-cli is not installed"})
    assert "Not measured: redis-server or redis-cli is not installed." in skipped


def test_the_pg_limit_table_sets_each_commands_cpu_beside_what_the_cores_give(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(summary.os, "cpu_count", lambda: 2)
    pgbench = {"p50_ms": 8.0, "p99_ms": 40.0, "transactions": 30_000}
    outcome = {
        "concurrency": 32,
        "tpcb": {**pgbench, "tps": 2_000.0, "postgresCpuSecondsPer1000": 0.45,
                 "generatorCpuSecondsPer1000": 0.1},
        "simple_update": {**pgbench, "tps": 4_000.0},
    }  # fmt: skip
    place_order = {
        "rps": 400.0, "p50_ms": 80.0, "p99_ms": 160.0, "gen_cpu_per_1k": 0.3,
        "server_cpu_per_1k": 1.3, "postgres_cpu_per_1k": 1.2, "projector_cpu_per_1k": 2.0,
    }  # fmt: skip
    text = "\n".join(summary.pg_limit_table(outcome, {"place_order_c32": place_order}))
    assert "| place_order (ours) | 400 | 80.00 | 160.00 | 0.20 | >= 0.6x: missed |" in text
    assert "| pgbench TPC-B-like | 0.10 |  | 0.45 |  | 0.55 |  |" in text
    # 2 cores at 0.6 x 2,000 tps: 1.67 ms of CPU for each order
    assert "| place_order (ours) | 0.30 | 1.30 | 1.20 | 2.00 | 4.80 | 1.67 |" in text
    # a PostgreSQL elsewhere: no CPU shares, no table
    del outcome["tpcb"]["postgresCpuSecondsPer1000"]
    assert "cores give" not in "\n".join(summary.pg_limit_table(outcome, {}))
