"""ghz itself, where it is installed: ``ghz --config bench/ghz/<scenario>.json`` with the
run's host, duration, concurrency and output; its JSON report is used as it is.

ghz cannot be installed on the machine this project is developed on, so this path is
exercised only where ghz exists; the configs it reads are checked by the unit tests.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

from bench.drivers.builtin import Load


def available() -> bool:
    return shutil.which("ghz") is not None


def run(load: Load, config: Path, output: Path) -> dict[str, Any]:
    """Run ghz with ``config``, overriding what the run decides; ghz's report."""
    binary = shutil.which("ghz")
    if binary is None:
        raise RuntimeError("ghz is not on PATH")
    argv = [
        binary, "--config", str(config), "--host", load.target,
        "--concurrency", str(load.concurrency), "--connections", str(load.connections),
        "--format", "json", "--output", str(output),
    ]  # fmt: skip
    argv += [f"--duration={load.duration_s:g}s"] if load.duration_s else [f"--total={load.total}"]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0 and not output.exists():
        raise RuntimeError(f"ghz failed ({done.returncode}): {done.stderr}")
    report: dict[str, Any] = json.loads(output.read_text())
    return report
