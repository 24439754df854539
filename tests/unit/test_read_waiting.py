"""poll_until_fresh: retries while behind, gives up with UNAVAILABLE after the budget."""

from __future__ import annotations

import time

import pytest

from common.errors import Unavailable
from common.positions import Position
from read_server.sources.base import Freshness
from read_server.sources.waiting import BEHIND, Behind, poll_until_fresh


class Attempts:
    """Behind ``behind`` times, then answers ``"ok"``."""

    def __init__(self, behind: int) -> None:
        self.behind = behind
        self.calls = 0

    async def __call__(self) -> str | Behind:
        self.calls += 1
        return BEHIND if self.calls <= self.behind else "ok"


async def test_returns_as_soon_as_the_attempt_is_fresh() -> None:
    attempts = Attempts(behind=3)
    assert await poll_until_fresh("redis:x", Freshness(Position(1, 1), 2.0), attempts) == "ok"
    assert attempts.calls == 4


async def test_a_zero_budget_still_tries_once() -> None:
    assert await poll_until_fresh("pg:x", Freshness(None, 0.0), Attempts(behind=0)) == "ok"
    with pytest.raises(Unavailable, match="within 0 ms"):
        await poll_until_fresh("pg:x", Freshness(Position(1, 1), 0.0), Attempts(behind=1))


async def test_gives_up_after_the_budget() -> None:
    attempts = Attempts(behind=10**6)
    started = time.perf_counter()
    with pytest.raises(Unavailable) as caught:
        await poll_until_fresh("pg:orders", Freshness(Position(1, 1), 0.12), attempts)
    elapsed = time.perf_counter() - started
    assert caught.value.message == (
        "projection pg:orders has not caught up with the consistency token within 120 ms"
    )
    assert 0.12 <= elapsed < 0.5
    # Backoff: a handful of polls, not a busy loop.
    assert 3 <= attempts.calls <= 15
