"""The README's five-minute tour, pasted into bash as it stands, against real servers: every
command runs, each takes its ids and token from the replies before it, and the order reads
back the same from the three sources."""

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


def tour() -> str:
    """The bash block under the README's "A five-minute tour"."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## A five-minute tour") :]
    return section.split("```bash\n", 1)[1].split("```", 1)[0]


@pytest.fixture
def system(settings: Settings, tmp_path: Path) -> Iterator[System]:
    with running(settings, tmp_path) as system:
        yield system


def test_the_readme_tour_runs_as_pasted(system: System, tmp_path: Path) -> None:
    if shutil.which("jq") is None:
        pytest.skip("jq is not installed")
    env = {
        "PATH": f"{ROOT / '.venv' / 'bin'}:/usr/bin:/bin",  # what `source .venv/bin/activate` gives
        "HOME": str(tmp_path),
        "W": system.write,
        "R": system.read,
    }
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", tour()],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr + system.log_tails()
    lines = done.stdout.splitlines()
    reads = [json.loads(line) for line in lines[:3]]
    assert [r.pop("source") for r in reads] == [
        "SOURCE_PROJECTION", "SOURCE_READ_MODEL", "SOURCE_WRITE_MODEL",
    ]  # fmt: skip
    assert reads == [{"status": "ORDER_STATUS_PENDING", "total_cents": "2598", "items": 1}] * 3
    assert "Code: InvalidArgument" in done.stdout + done.stderr
    assert lines[-1] == "OrderPlaced"
