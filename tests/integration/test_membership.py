"""Projector processes counting each other through PostgreSQL (projector.membership)."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import REGISTRY

from common.settings import Settings
from projector.membership import Membership
from tests.support.events import eventually

pytestmark = pytest.mark.integration


async def test_members_count_each_other_and_a_leaver_stops_counting(settings: Settings) -> None:
    first, second = (Membership(settings.asyncpg_dsn, 8, lease_timeout=1.0) for _ in range(2))
    stop_first, stop_second = asyncio.Event(), asyncio.Event()
    tasks = [
        asyncio.create_task(first.run(stop_first)),
        asyncio.create_task(second.run(stop_second)),
    ]
    try:
        await asyncio.wait_for(first.joined.wait(), 10)
        await asyncio.wait_for(second.joined.wait(), 10)

        async def both() -> bool:
            return first.live == second.live == 2

        await eventually(both, within=10)
        assert first.share == second.share == 4
        # (both in this one test process: the gauges hold the last count of either)
        assert REGISTRY.get_sample_value("cqrs_projector_processes") == 2
        assert REGISTRY.get_sample_value("cqrs_projector_share") == 4

        stop_second.set()
        await tasks[1]

        async def alone() -> bool:
            return first.live == 1

        await eventually(alone, within=10)
        assert first.share == 8
    finally:
        stop_first.set()
        stop_second.set()
        await asyncio.gather(*tasks)
