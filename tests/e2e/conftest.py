"""End-to-end fixtures: real server processes on free ports."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from common.settings import Settings
from tests.support.nats import StreamNames, delete_stream, unique_stream
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


@pytest.fixture
async def names() -> AsyncIterator[StreamNames]:
    """A JetStream stream name and subject prefix of the test's own, deleted afterwards."""
    names = unique_stream()
    try:
        yield names
    finally:
        await delete_stream(names.stream)
