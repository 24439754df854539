"""Commands at a steady rate, as the freshness and watch-active scenarios send them."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable


async def at_rate(rate: float, seconds: float, command: Callable[[int], Awaitable[None]]) -> int:
    """Start ``command(n)`` at ``rate`` per second for ``seconds`` (each on time, whether
    the ones before have answered or not), then wait for all; how many were started."""
    started = time.monotonic()
    in_flight: set[asyncio.Task[None]] = set()
    sent = 0
    for n in itertools.count():
        due = started + n / rate
        if due >= started + seconds:
            break
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        task = asyncio.ensure_future(command(n))
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)
        sent += 1
    await asyncio.gather(*in_flight)
    return sent
