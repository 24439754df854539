"""docker-compose.yml without a Docker engine: valid against the compose specification's
JSON schema, and consistent with the code (settings, CLI, metrics ports, the Prometheus
scrape jobs, the health probe) and with the files it mounts.

The schema is the compose-spec schema shipped in PyPI's ``docker-compose`` 1.29.2
(``compose/config/compose_spec.json``), downloaded once with pip and cached in the venv.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from common.settings import _ENV_FIELDS, load_settings
from cqrs.cli import _parser

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_PYPI = "docker-compose==1.29.2"
CACHE = Path(sys.prefix) / "share" / "cqrs" / "compose_spec-1.29.2.json"
APP = {"write-server": "write", "read-server": "read", "projector": "projector"}


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    if not CACHE.exists():
        with tempfile.TemporaryDirectory() as tmp:
            pip = [sys.executable, "-m", "pip", "download", "--no-deps", "-q"]
            fetched = subprocess.run(
                [*pip, "-d", tmp, COMPOSE_PYPI],
                capture_output=True,
                text=True,
                timeout=300,
            )
            if fetched.returncode != 0:
                pytest.skip(f"cannot download {COMPOSE_PYPI} for its schema: {fetched.stderr}")
            wheel = next(Path(tmp).glob("*.whl"))
            with zipfile.ZipFile(wheel) as archive:
                data = archive.read("compose/config/compose_spec.json")
        CACHE.parent.mkdir(parents=True, exist_ok=True)
        CACHE.write_bytes(data)
    loaded: dict[str, Any] = json.loads(CACHE.read_text())
    return loaded


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


def _errors(schema: dict[str, Any], document: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft201909Validator(schema)
    return [f"{list(e.path)}: {e.message}" for e in validator.iter_errors(document)]


def test_the_file_follows_the_compose_specification(
    schema: dict[str, Any], compose: dict[str, Any]
) -> None:
    assert _errors(schema, compose) == []
    assert set(compose["services"]) == {
        "postgres",
        "redis",
        "nats",
        "payments-sandbox",
        "migrate",
        *APP,
        "prometheus",
        "grafana",
    }


@pytest.mark.parametrize(
    "mistake",
    [
        lambda c: c["services"]["redis"].update(healthchek={"test": ["CMD", "true"]}),
        lambda c: c["services"]["projector"].update(restart=["always"]),
        lambda c: c["services"]["write-server"]["depends_on"]["migrate"].update(
            condition="service_finished"
        ),
        lambda c: c["services"]["grafana"].update(ports="3000"),
    ],
)
def test_the_schema_catches_mistakes(schema: dict[str, Any], mistake: Any) -> None:
    broken: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    mistake(broken)
    assert _errors(schema, broken)


def test_every_variable_is_a_setting_and_every_command_parses(compose: dict[str, Any]) -> None:
    for name in ("migrate", *APP):
        service = compose["services"][name]
        unknown = [v for v in service["environment"] if v.startswith("CQRS_")]
        unknown = [v for v in unknown if v not in _ENV_FIELDS]
        assert not unknown, f"{name}: not settings: {unknown}"
        args = _parser().parse_args(service["command"])  # argparse exits on a bad command
        assert args.command == service["command"][0]
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["cqrs"]' in dockerfile


def test_ports_probes_and_scrape_jobs_agree_with_the_settings(compose: dict[str, Any]) -> None:
    prometheus = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    jobs = {j["job_name"]: j["static_configs"][0]["targets"] for j in prometheus["scrape_configs"]}
    assert set(jobs) == set(APP)
    for name, probe in APP.items():
        service = compose["services"][name]
        settings = load_settings({k: str(v) for k, v in service["environment"].items()})
        assert settings.metrics_host == "0.0.0.0", f"{name}: Prometheus could not scrape it"
        metrics = getattr(settings, f"{probe}_metrics_port")
        published = {p.rsplit(":", 1)[-1] for p in service["ports"]}
        grpc_port = {"write": settings.write_port, "read": settings.read_port}.get(probe)
        expected = {str(metrics)} | ({str(grpc_port)} if grpc_port else set())
        assert published == expected, f"{name}: publishes {published}, listens on {expected}"
        assert jobs[name] == [f"{name}:{metrics}"]
        assert service["healthcheck"]["test"] == ["CMD", "cqrs", "probe", probe]
        if grpc_port:
            host = settings.write_host if probe == "write" else settings.read_host
            assert host == "0.0.0.0", f"{name} must listen beyond its container"


def test_mounts_exist_and_dependencies_are_services(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"
            else:
                assert source in compose["volumes"], f"{name}: undeclared volume {source}"
        for dependency in service.get("depends_on", {}):
            assert dependency in services, f"{name} depends on unknown {dependency}"
    prometheus_mount = next(v for v in services["prometheus"]["volumes"] if v.startswith("./"))
    assert prometheus_mount.startswith("./deploy/prometheus:/etc/prometheus")
    provisioned = yaml.safe_load(
        (ROOT / "deploy/grafana/provisioning/dashboards/cqrs.yml").read_text()
    )
    dashboards_at = provisioned["providers"][0]["options"]["path"]
    assert f"./deploy/grafana/dashboards:{dashboards_at}:ro" in services["grafana"]["volumes"]


def test_the_pgbouncer_override_is_valid_and_routes_only_the_servers(
    schema: dict[str, Any], compose: dict[str, Any]
) -> None:
    """deploy/compose/pgbouncer.yml (over docker-compose.yml): a valid compose file, whose
    variables are settings, sending the servers (cache off) through PgBouncer and leaving
    the projector (session locks, LISTEN) on PostgreSQL."""
    override: dict[str, Any] = yaml.safe_load(
        (ROOT / "deploy" / "compose" / "pgbouncer.yml").read_text()
    )
    assert _errors(schema, override) == []
    services = override["services"]
    for name in ("write-server", "read-server"):
        env = services[name]["environment"]
        assert set(env) <= set(_ENV_FIELDS)
        assert "@pgbouncer:" in env["CQRS_DATABASE_URL"]
        assert env["CQRS_DB_STATEMENT_CACHE_SIZE"] == "0"
        assert name in compose["services"]
    assert "projector" not in services
    assert services["pgbouncer"]["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_the_cluster_override_is_valid_and_wires_the_topology(
    schema: dict[str, Any], compose: dict[str, Any]
) -> None:
    """deploy/compose/cluster.yml (over docker-compose.yml): a valid compose file whose
    variables are settings and whose commands parse; the servers and both projectors on the
    three-node Redis Cluster it starts (after it is joined), the read server on the replica,
    two workers per server; every mounted file exists."""
    override: dict[str, Any] = yaml.safe_load(
        (ROOT / "deploy" / "compose" / "cluster.yml").read_text()
    )
    assert _errors(schema, override) == []
    services = override["services"]
    nodes = [n for n in services if n.startswith("redis-") and n != "redis-cluster-init"]
    assert nodes == ["redis-1", "redis-2", "redis-3"]
    init = " ".join(services["redis-cluster-init"]["command"])
    assert all(f"getent hosts {n} " in init for n in nodes)
    parser = _parser()
    for name in ("write-server", "read-server", "projector", "projector-2"):
        env = services[name]["environment"]
        assert set(env) <= set(_ENV_FIELDS), name
        url = env["CQRS_REDIS_URL"]
        assert url == "redis+cluster://" + ",".join(f"{n}:6379" for n in nodes), name
        if name != "projector-2":
            assert name in compose["services"]
        if "command" in services[name]:
            parser.parse_args(services[name]["command"])
        if name != "projector-2":
            waits = services[name]["depends_on"]["redis-cluster-init"]["condition"]
            assert waits == "service_completed_successfully"
    for name in ("write-server", "read-server"):
        assert services[name]["command"][-2:] == ["--workers", "2"]
    read_url = services["read-server"]["environment"]["CQRS_READ_DATABASE_URL"]
    assert "@postgres-replica:5432/" in read_url
    assert "pg_basebackup -h postgres " in " ".join(services["postgres-replica"]["command"])
    for mount in services["postgres"]["volumes"]:
        assert (ROOT / mount.split(":")[0]).is_file(), mount
    # projector-2 runs what the projector runs, on the same database and services.
    first = {**compose["x-app"]["environment"], **services["projector"]["environment"]}
    second = services["projector-2"]["environment"]
    assert {k: first[k] for k in second} == second
