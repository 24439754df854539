"""buf: the committed protos pass `buf lint` (buf.yaml), and its breaking rules refuse a
wire-incompatible change (what `make lint` checks against main)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUF = shutil.which("buf", path=str(Path(sys.executable).parent)) or shutil.which("buf")
pytestmark = pytest.mark.skipif(BUF is None, reason="buf is not installed (pip install buf-bin)")


def _buf(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    assert BUF is not None
    return subprocess.run([BUF, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_buf_lint_passes() -> None:
    linted = _buf("lint")
    assert linted.returncode == 0, linted.stdout + linted.stderr


def test_buf_breaking_refuses_a_renumbered_field(tmp_path: Path) -> None:
    changed = tmp_path / "work"
    shutil.copytree(ROOT / "protos", changed / "protos")
    shutil.copy(ROOT / "buf.yaml", changed / "buf.yaml")
    same = _buf("breaking", "protos", "--against", str(ROOT / "protos"), cwd=changed)
    assert same.returncode == 0, same.stdout + same.stderr

    proto = changed / "protos/shop/v1/command_service.proto"
    text = proto.read_text()
    assert "  string name = 1;" in text
    proto.write_text(text.replace("  string name = 1;", "  string name = 9;", 1))
    broken = _buf("breaking", "protos", "--against", str(ROOT / "protos"), cwd=changed)
    assert broken.returncode != 0
    assert 'field "1" with name "name" on message "CreateProductRequest"' in broken.stdout
