"""The rebuild lock between runners of one process: they share the process's lease
session, on which a PostgreSQL session lock is re-entrant, so two segments of one consumer
starting together both took it and built the same copy at once (a CI run: the shadow table
"already exists"). They now take it in turn."""

from __future__ import annotations

import asyncio

import pytest

from common.settings import Settings
from projector.leadership import LeaseSession
from projector.rebuild import rebuild_lock

pytestmark = pytest.mark.integration


async def test_runners_sharing_a_session_take_the_rebuild_lock_in_turn(settings: Settings) -> None:
    dsn = settings.asyncpg_dsn
    session = LeaseSession(dsn, "cqrs-test-rebuild-lock", lease_timeout=5)
    stop = asyncio.Event()
    inside: list[str] = []
    overlapped: list[str] = []

    async def build(segment: str) -> None:
        async with rebuild_lock(dsn, "redis:orders", wait_until=stop, session=session) as got:
            assert got
            if inside:
                overlapped.append(segment)
            inside.append(segment)
            await asyncio.sleep(0.3)
            inside.remove(segment)

    try:
        await asyncio.wait_for(asyncio.gather(build("0/2"), build("1/2")), 10)
    finally:
        await session.reset()
    assert overlapped == []
    assert session.rebuilding == set()
