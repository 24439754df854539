"""Fixtures for integration tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from common.settings import Settings
from projector.bootstrap import App, open_app


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[App]:
    """The projector's pools, clients and consumers on the test database and Redis prefix."""
    async with open_app(settings) as projector_app:
        yield projector_app
