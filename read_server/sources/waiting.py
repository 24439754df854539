"""Waiting for a projection to reach a consistency token's position."""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Awaitable, Callable
from typing import Literal, TypeVar

from common.errors import Unavailable
from read_server.sources.base import Freshness

T = TypeVar("T")

# Short first sleeps: a command's events are usually projected within a few ms.
FIRST_DELAY_S = 0.002
MAX_DELAY_S = 0.05


class Behind(enum.Enum):
    """Returned by an attempt whose projection has not reached the position yet."""

    BEHIND = enum.auto()


BEHIND = Behind.BEHIND


def not_caught_up(projection: str, freshness: Freshness) -> Unavailable:
    waited_ms = max(0, round(freshness.max_wait_s * 1000))
    return Unavailable(
        f"projection {projection} has not caught up with the consistency token"
        f" within {waited_ms} ms"
    )


async def poll_until_fresh(
    projection: str,
    freshness: Freshness,
    attempt: Callable[[], Awaitable[T | Literal[Behind.BEHIND]]],
) -> T:
    """Call ``attempt`` until it is not :data:`BEHIND`, backing off between calls.

    Gives up with ``Unavailable`` once ``freshness.max_wait_s`` has passed
    (never earlier than after the first attempt).
    """
    loop = asyncio.get_running_loop()
    give_up_at = loop.time() + freshness.max_wait_s
    delay = FIRST_DELAY_S
    while True:
        result = await attempt()
        if result is not BEHIND:
            return result
        remaining = give_up_at - loop.time()
        if remaining <= 0:
            raise not_caught_up(projection, freshness)
        await asyncio.sleep(min(delay, remaining))
        delay = min(delay * 2, MAX_DELAY_S)
