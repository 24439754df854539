"""A Prometheus beside a local system (``cqrs up --prometheus``, the observability test).

The scrape jobs are those of ``deploy/prometheus/prometheus.yml`` (one per process, named
like its compose service) pointed at this machine's metrics ports, with the committed
alert rules. The config is written as JSON, which Prometheus reads as YAML.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.settings import Settings, worker_metrics_port

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "cqrs.json"


def scrape_targets(
    settings: Settings, host: str = "127.0.0.1", projectors: int = 1
) -> dict[str, list[str]]:
    """Each job's ``host:port`` targets (every worker of a ``--workers N`` server, every
    process of ``cqrs up --projectors N``)."""
    jobs = {
        "write-server": (settings.write_metrics_port, settings.write_workers),
        "read-server": (settings.read_metrics_port, settings.read_workers),
        "projector": (settings.projector_metrics_port, projectors),
    }
    return {
        job: [f"{host}:{worker_metrics_port(port, i)}" for i in range(workers)]
        for job, (port, workers) in jobs.items()
        if port
    }


def local_config(
    settings: Settings, *, interval: str = "5s", rules: Path = ALERTS, projectors: int = 1
) -> dict[str, Any]:
    """The Prometheus config scraping ``settings``' processes on this machine (with
    ``projectors`` projector processes)."""
    return {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "rule_files": [str(rules)],
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": targets}]}
            for job, targets in scrape_targets(settings, projectors=projectors).items()
        ],
    }


def binary() -> str | None:
    """The ``prometheus`` executable (Debian's package), or None."""
    return shutil.which("prometheus")


@dataclass
class Running:
    """A Prometheus process and where to reach its HTTP API."""

    process: subprocess.Popen[bytes]
    url: str

    def stop(self, timeout: float = 10) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start(config: dict[str, Any], data_dir: Path, port: int, *, log: Path | None = None) -> Running:
    """Run Prometheus on ``127.0.0.1:port`` with ``config``, its data in ``data_dir``;
    returns once its API answers. Raises RuntimeError when it is not installed or dies."""
    exe = binary()
    if exe is None:
        raise RuntimeError("prometheus is not installed (Debian: apt-get install prometheus)")
    data_dir.mkdir(parents=True, exist_ok=True)
    config_path = data_dir / "prometheus.yml"
    config_path.write_text(json.dumps(config, indent=2))
    out = (log or data_dir / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [
            exe,
            f"--config.file={config_path}",
            f"--storage.tsdb.path={data_dir / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdin=subprocess.DEVNULL,
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    running = Running(process, f"http://127.0.0.1:{port}")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"prometheus exited with code {process.returncode}")
        try:
            with urllib.request.urlopen(running.url + "/-/ready", timeout=1) as reply:
                if reply.status == 200:
                    return running
        except OSError:
            pass
        time.sleep(0.2)
    running.stop()
    raise RuntimeError("prometheus did not become ready within 30 s")


def api(url: str, path: str, **params: str) -> Any:
    """GET ``url`` + ``path`` of Prometheus' HTTP API; the ``data`` of a success."""
    query = urllib.parse.urlencode(params)
    with urllib.request.urlopen(f"{url}{path}?{query}", timeout=10) as reply:
        body = json.load(reply)
    if body.get("status") != "success":
        raise RuntimeError(f"{path} {params}: {body}")
    return body["data"]


def dashboard_targets(path: Path = DASHBOARD) -> list[tuple[str, str, str]]:
    """(panel title, legend format, PromQL) of every target of every panel."""
    dashboard = json.loads(path.read_text())
    return [
        (panel["title"], target.get("legendFormat", ""), target["expr"])
        for panel in dashboard["panels"]
        if panel.get("type") != "row"
        for target in panel.get("targets", [])
    ]
