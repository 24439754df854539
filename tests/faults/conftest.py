"""Fixtures of the fault-injection suite: private servers the tests may kill.

The shared PostgreSQL and Redis are never stopped, flushed or reconfigured: a test
that must kill or empty a service gets its own instance here, started from the
locally installed binaries (skipped with a clear message where there are none);
``scratch`` and ``private_redis`` live in ``tests/conftest.py`` (integration tests use
them too).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cqrs.instances import PrivatePostgres
from tests.support.private_postgres import started

pytestmark = pytest.mark.faults


@pytest.fixture
def private_postgres(scratch: Path) -> Iterator[PrivatePostgres]:
    """A PostgreSQL cluster of our own (initdb), with the ``cqrs`` database migrated."""
    server = started(scratch)
    try:
        yield server
    finally:
        server.stop()
