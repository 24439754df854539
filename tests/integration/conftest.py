"""Fixtures for integration tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from common.settings import Settings
from projector.bootstrap import Resources, open_resources


@pytest.fixture
async def resources(settings: Settings) -> AsyncIterator[Resources]:
    """The projector's pools and clients on the test database and Redis prefix."""
    async with open_resources(settings) as res:
        yield res
