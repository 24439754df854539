"""Waiting for a consistency token: shared per projection, bounded by the budget."""

from __future__ import annotations

import asyncio
import time

import pytest

from common.errors import Unavailable
from common.positions import Position
from read_server.sources.base import Freshness
from read_server.sources.waiting import BEHIND, CheckpointWatch, NotReady, Pending

WANTED = Position(10, 5)
EARLIER = Position(1, 0)


class Projection:
    """A projection whose checkpoint a test moves; counts how often it was asked."""

    def __init__(self, checkpoint: Position | None = EARLIER) -> None:
        self.checkpoint = checkpoint
        self.reads = 0
        self.attempts = 0

    async def read_checkpoint(self, name: str) -> Position | None:
        self.reads += 1
        return self.checkpoint

    async def attempt(self) -> str | Pending:
        self.attempts += 1
        if self.checkpoint is None:
            return NotReady("is being rebuilt")
        return "ok" if self.checkpoint >= WANTED else BEHIND


async def test_returns_as_soon_as_the_attempt_is_fresh() -> None:
    p = Projection(WANTED)
    watch = CheckpointWatch(p.read_checkpoint)
    assert await watch.until_fresh("redis:x", Freshness(WANTED, 2.0), p.attempt) == "ok"
    assert (p.attempts, p.reads) == (1, 0)


async def test_a_zero_budget_still_tries_once() -> None:
    p = Projection(WANTED)
    watch = CheckpointWatch(p.read_checkpoint)
    assert await watch.until_fresh("pg:x", Freshness(None, 0.0), p.attempt) == "ok"
    behind = Projection()
    watch = CheckpointWatch(behind.read_checkpoint)
    with pytest.raises(Unavailable, match="within 0 ms"):
        await watch.until_fresh("pg:x", Freshness(WANTED, 0.0), behind.attempt)
    assert behind.attempts == 1


async def test_wakes_once_the_checkpoint_reaches_the_token() -> None:
    p = Projection()
    watch = CheckpointWatch(p.read_checkpoint)
    waiting = asyncio.create_task(watch.until_fresh("redis:x", Freshness(WANTED, 2.0), p.attempt))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    p.checkpoint = WANTED
    started = time.perf_counter()
    assert await waiting == "ok"
    assert time.perf_counter() - started < 0.1


async def test_gives_up_after_the_budget() -> None:
    p = Projection()
    watch = CheckpointWatch(p.read_checkpoint)
    started = time.perf_counter()
    with pytest.raises(Unavailable) as caught:
        await watch.until_fresh("pg:orders", Freshness(WANTED, 0.12), p.attempt)
    elapsed = time.perf_counter() - started
    assert caught.value.message == (
        "projection pg:orders has not caught up with the consistency token within 120 ms"
    )
    assert 0.12 <= elapsed < 0.5
    assert p.attempts == 1  # no busy loop: attempts only follow a wake-up


async def test_many_waiters_share_one_checkpoint_read_per_poll() -> None:
    """A thousand requests waiting on one projection cost one read per poll interval."""
    p = Projection()
    watch = CheckpointWatch(p.read_checkpoint)
    waiters = [
        asyncio.create_task(watch.until_fresh("redis:x", Freshness(WANTED, 5.0), p.attempt))
        for _ in range(1000)
    ]
    await asyncio.sleep(0.2)
    assert p.reads < 40, p.reads  # ~20 polls of 10 ms, not 1000 x 20
    p.checkpoint = WANTED
    assert await asyncio.gather(*waiters) == ["ok"] * 1000


async def test_a_projection_being_rebuilt_is_waited_for_with_a_token_only() -> None:
    p = Projection(None)
    watch = CheckpointWatch(p.read_checkpoint)
    with pytest.raises(Unavailable, match=r"projection redis:x is being rebuilt$"):
        await watch.until_fresh("redis:x", Freshness(None, 1.0), p.attempt)
    with pytest.raises(Unavailable, match="being rebuilt \\(waited 50 ms for the token\\)"):
        await watch.until_fresh("redis:x", Freshness(WANTED, 0.05), p.attempt)
