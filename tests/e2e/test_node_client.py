"""examples/node/client.js, a client in another language, against the real servers: it creates,
orders, reads its order back from the projection with the consistency token, and decodes the
field violations of a bad request from ``grpc-status-details-bin`` with the vendored
google/rpc protos. Skipped (saying why) where ``node``/``npm`` are missing or the npm registry
cannot be reached."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from common.settings import Settings
from tests.support.servers import ROOT
from tests.support.system import System, running

pytestmark = pytest.mark.e2e

CLIENT = ROOT / "examples" / "node"


@pytest.fixture(scope="module")
def installed() -> Path:
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node and npm are not installed")
    done = subprocess.run(
        ["npm", "install", "--no-audit", "--no-fund", "--silent"],
        cwd=CLIENT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"npm install failed (no registry?): {done.stderr[-500:]}")
    return CLIENT


@pytest.fixture
def system(settings: Settings, tmp_path: Path) -> Iterator[System]:
    with running(settings, tmp_path) as system:
        yield system


def test_the_node_client_orders_reads_its_write_and_shows_field_violations(
    installed: Path, system: System
) -> None:
    done = subprocess.run(
        ["node", "client.js", "--write", system.write, "--read", system.read],
        cwd=installed, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr + system.log_tails()
    lines = {k: v for line in done.stdout.splitlines() for k, v in json.loads(line).items()}
    order, read = lines["order"], lines["read"]
    assert read["id"] == order["id"] and order["consistency_token"]
    assert read["status"] == "ORDER_STATUS_PENDING" and read["items"] == 1
    assert int(read["total_cents"]) == 2 * 1299
    fields = {v["field"] for v in lines["rejected"]["violations"]}
    assert {"name", "price_cents", "currency"} <= fields, lines["rejected"]
