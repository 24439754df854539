"""The docs site builds with `mkdocs build --strict`: every page in the nav, no link to a
missing page or anchor (what CI runs, through `make test`)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_docs_site_builds_strictly(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    pages = {p.parent.name for p in tmp_path.glob("*/index.html")}
    assert {"writing", "reading", "projector", "operating", "API", "ARCHITECTURE"} <= pages
    assert (tmp_path / "index.html").exists()
