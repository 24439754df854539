"""End-to-end fixtures: real server processes on free ports."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from common.settings import Settings
from tests.support.servers import env_for, free_port, start, wait_serving


@pytest.fixture
def write_server(settings: Settings, tmp_path: Path) -> Iterator[str]:
    """Address of a running ``cqrs write-server`` on the test database; SIGTERM must exit 0."""
    port = free_port()
    process = start(["write-server", "--port", str(port)], env_for(settings), tmp_path / "w.log")
    address = f"127.0.0.1:{port}"
    try:
        wait_serving(address, process)
        yield address
    finally:
        code = process.stop()
    assert code == 0, f"write server exited {code} on SIGTERM:\n{process.log()}"
