"""Waiting for a projection to reach a consistency token's position.

An attempt answers, or says the projection is :data:`BEHIND` the token, or that it
is :class:`NotReady` at all (being built, lost). Without a token a projection that
is not ready is UNAVAILABLE at once; with one, it is waited for like one that is
behind (a projection being rebuilt will get there), within the same budget.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
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


@dataclass(frozen=True, slots=True)
class NotReady:
    """Returned by an attempt whose projection cannot answer at all; ``why`` completes
    "projection <name> ...", e.g. "is being rebuilt from the event log"."""

    why: str


Pending = Literal[Behind.BEHIND] | NotReady


def not_caught_up(projection: str, freshness: Freshness) -> Unavailable:
    waited_ms = max(0, round(freshness.max_wait_s * 1000))
    return Unavailable(
        f"projection {projection} has not caught up with the consistency token"
        f" within {waited_ms} ms"
    )


async def poll_until_fresh(
    projection: str,
    freshness: Freshness,
    attempt: Callable[[], Awaitable[T | Pending]],
) -> T:
    """Call ``attempt`` until it answers, backing off between calls.

    Gives up with ``Unavailable`` once ``freshness.max_wait_s`` has passed (never
    earlier than after the first attempt). The budget bounds the retries themselves
    too, so a slow store under load cannot stretch the wait past it.
    """
    loop = asyncio.get_running_loop()
    give_up_at = loop.time() + freshness.max_wait_s
    result = await attempt()
    if not isinstance(result, Behind | NotReady):
        return result
    if freshness.position is None and isinstance(result, NotReady):
        raise Unavailable(f"projection {projection} {result.why}")
    delay = FIRST_DELAY_S
    budget = asyncio.timeout_at(give_up_at)
    try:
        async with budget:
            while True:
                await asyncio.sleep(min(delay, max(0.0, give_up_at - loop.time())))
                delay = min(delay * 2, MAX_DELAY_S)
                result = await attempt()
                if not isinstance(result, Behind | NotReady):
                    return result
    except TimeoutError:
        if not budget.expired():
            raise  # the store's own timeout, not the budget
    if isinstance(result, NotReady):
        waited_ms = max(0, round(freshness.max_wait_s * 1000))
        raise Unavailable(
            f"projection {projection} {result.why} (waited {waited_ms} ms for the token)"
        )
    raise not_caught_up(projection, freshness)
