"""deploy/prometheus: promtool accepts the config and the rules, and the config that
`cqrs up --prometheus` and the tests generate scrapes the same jobs as the committed one."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from common.settings import Settings
from cqrs import prometheus

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool is not installed (apt-get install prometheus)"
)
COMMITTED = prometheus.DEPLOY / "prometheus" / "prometheus.yml"


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=60)


@needs_promtool
def test_promtool_checks_the_committed_config_and_rules() -> None:
    config = _promtool("check", "config", str(COMMITTED))
    assert config.returncode == 0, config.stdout + config.stderr
    rules = _promtool("check", "rules", str(prometheus.ALERTS))
    assert rules.returncode == 0, rules.stdout + rules.stderr
    assert "9 rules found" in rules.stdout


@needs_promtool
def test_promtool_catches_a_broken_rule(tmp_path: Path) -> None:
    broken = tmp_path / "alerts.yml"
    broken.write_text(prometheus.ALERTS.read_text().replace("== 1", "== = 1", 1))
    assert _promtool("check", "rules", str(broken)).returncode != 0


@needs_promtool
def test_generated_config_is_valid_and_scrapes_the_committed_jobs(tmp_path: Path) -> None:
    settings = Settings(write_workers=2)
    generated = prometheus.local_config(settings)
    path = tmp_path / "prometheus.yml"
    path.write_text(json.dumps(generated))
    checked = _promtool("check", "config", str(path))
    assert checked.returncode == 0, checked.stdout + checked.stderr

    committed = yaml.safe_load(COMMITTED.read_text())
    assert [j["job_name"] for j in generated["scrape_configs"]] == [
        j["job_name"] for j in committed["scrape_configs"]
    ]
    targets = {
        j["job_name"]: j["static_configs"][0]["targets"] for j in generated["scrape_configs"]
    }
    assert targets == {
        "write-server": ["127.0.0.1:9101", "127.0.0.1:9201"],
        "read-server": ["127.0.0.1:9102"],
        "projector": ["127.0.0.1:9103"],
    }
    # Compose's targets are the service names at the same default ports.
    ports = {
        j["job_name"]: [t.split(":")[1] for t in j["static_configs"][0]["targets"]]
        for j in committed["scrape_configs"]
    }
    assert ports == {"write-server": ["9101"], "read-server": ["9102"], "projector": ["9103"]}
    assert generated["rule_files"] == [str(prometheus.ALERTS)]
    # `cqrs up --projectors 2`: the second projector's metrics on the next worker port.
    two = prometheus.scrape_targets(settings, projectors=2)["projector"]
    assert two == ["127.0.0.1:9103", "127.0.0.1:9203"]


def test_dashboard_panels_each_have_queries_and_a_datasource_uid() -> None:
    board = json.loads(prometheus.DASHBOARD.read_text())
    datasource = yaml.safe_load(
        (prometheus.DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text()
    )["datasources"][0]
    panels = [p for p in board["panels"] if p["type"] != "row"]
    assert len({p["id"] for p in board["panels"]}) == len(board["panels"])
    for panel in panels:
        assert panel["targets"], panel["title"]
        assert panel["datasource"]["uid"] == datasource["uid"]
        assert {t["refId"] for t in panel["targets"]} == {
            chr(65 + i) for i in range(len(panel["targets"]))
        }
    assert len(prometheus.dashboard_targets()) >= 15


@needs_promtool
def test_a_segment_without_a_leader_alerts_although_its_siblings_have_one(tmp_path: Path) -> None:
    """Leases are per segment (projector.segments): the rule must not sum them away."""
    cases = {
        "rule_files": [str(prometheus.ALERTS)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    {
                        "series": 'cqrs_projection_leader{projection="pg:orders",segment="0/2",'
                        'instance="a"}',
                        "values": "1x5",
                    },
                    {
                        "series": 'cqrs_projection_leader{projection="pg:orders",segment="1/2",'
                        'instance="a"}',
                        "values": "0x5",
                    },
                ],
                "alert_rule_test": [
                    {
                        "eval_time": "4m",
                        "alertname": "CqrsProjectionWithoutLeader",
                        "exp_alerts": [
                            {
                                "exp_labels": {
                                    "severity": "critical",
                                    "projection": "pg:orders",
                                    "segment": "1/2",
                                },
                                "exp_annotations": {
                                    "summary": "no projector leads pg:orders 1/2",
                                    "description": "Projector processes run but none holds the "
                                    "lease of this projection: it is not being updated.",
                                },
                            }
                        ],
                    }
                ],
            }
        ],
    }
    path = tmp_path / "segments_test.yml"
    path.write_text(json.dumps(cases))
    tested = _promtool("test", "rules", str(path))
    assert tested.returncode == 0, tested.stdout + tested.stderr


def _alert_rule_test(
    tmp_path: Path, series: dict[str, str], alert: str, expected: dict[str, list[Any]]
) -> None:
    """``promtool test rules`` of the committed alerts: ``series`` (name{labels} -> values,
    one sample a minute) must make ``alert`` fire as ``expected`` says (eval time -> the
    alerts then)."""
    cases = {
        "rule_files": [str(prometheus.ALERTS)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [{"series": k, "values": v} for k, v in series.items()],
                "alert_rule_test": [
                    {"eval_time": at, "alertname": alert, "exp_alerts": alerts}
                    for at, alerts in expected.items()
                ],
            }
        ],
    }
    path = tmp_path / f"{alert}_test.yml"
    path.write_text(json.dumps(cases))
    tested = _promtool("test", "rules", str(path))
    assert tested.returncode == 0, tested.stdout + tested.stderr


@needs_promtool
def test_a_drift_found_by_the_audit_alerts_for_ten_minutes(tmp_path: Path) -> None:
    """cqrs_audit_drift_total (projector.audit): one drift fires CqrsProjectionDrift at
    once, per projection (a split one's segments' processes summed), and it resolves
    once ten minutes pass without another."""
    drift = {
        "exp_labels": {"severity": "warning", "projection": "redis:orders"},
        "exp_annotations": {
            "summary": "projection redis:orders differs from the write model",
            "description": "The continuous audit found documents that differ from the write "
            "model in the last 10 minutes: see `cqrs projector status` and the projector's "
            "WARNING log (CQRS_AUDIT_REPAIR rewrites them; `cqrs projector rebuild` rebuilds "
            "all).",
        },
    }
    series = {
        'cqrs_audit_drift_total{projection="redis:orders",instance="a"}': (
            "0 0 0 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1"
        ),
        'cqrs_audit_drift_total{projection="pg:orders",instance="a"}': "0x19",
    }
    expected = {"2m": [], "4m": [drift], "18m": []}
    _alert_rule_test(tmp_path, series, "CqrsProjectionDrift", expected)


@needs_promtool
def test_parked_aggregates_alert_after_a_minute_and_resolve_once_unparked(tmp_path: Path) -> None:
    """cqrs_projection_parked (projector.parking): any parked aggregate, in any process's
    view, fires CqrsAggregatesParked after a minute; it resolves when the count is 0 again."""
    parked = {
        "exp_labels": {"severity": "warning", "projection": "redis:orders"},
        "exp_annotations": {
            "summary": "projection redis:orders has 2 parked aggregate(s)",
            "description": "Poison events set these aggregates aside (CQRS_PROJECTOR_PARK): "
            "their documents stop before the event and reads of them answer "
            "FAILED_PRECONDITION, while every other aggregate goes on. See `cqrs projector "
            "parked`, fix the cause, then `cqrs projector unpark`.",
        },
    }
    series = {
        'cqrs_projection_parked{projection="redis:orders",instance="a"}': "0 0 2 2 2 2 0 0",
        'cqrs_projection_parked{projection="redis:orders",instance="b"}': "0 0 1 1 1 1 0 0",
        'cqrs_projection_parked{projection="pg:orders",instance="a"}': "0x7",
    }
    expected = {"2m": [], "4m": [parked], "7m": []}
    _alert_rule_test(tmp_path, series, "CqrsAggregatesParked", expected)
