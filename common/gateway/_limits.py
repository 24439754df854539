"""Per-host rate limit (aiolimiter's leaky bucket) and concurrency bound (a semaphore), and
the gateway's shared bound on attempts in flight over all hosts (the pool's size)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiolimiter import AsyncLimiter

from common.gateway._config import GatewayConfig
from common.gateway.errors import RateLimited


class HostLimits:
    """The slots of one host; other hosts have their own, so waiting here slows no one else."""

    def __init__(self, host: str, config: GatewayConfig) -> None:
        self._host = host
        # rate_burst requests may go at once; the bucket then drains at rate_per_host.
        self._limiter = (
            AsyncLimiter(config.rate_burst, config.rate_burst / config.rate_per_host)
            if config.rate_per_host > 0
            else None
        )
        self._slots = asyncio.Semaphore(config.max_connections_per_host)

    @asynccontextmanager
    async def slot(self, wait_s: float, pool: asyncio.Semaphore) -> AsyncIterator[None]:
        """Hold a rate slot and a concurrency slot of this host, then one of ``pool`` (the
        gateway's, over all hosts) for one request; RateLimited when they cannot all be had
        within ``wait_s``. The host's slots come first: a host at its own limit waits
        without holding a place of the shared pool. Waiters are served in arrival order."""
        started = time.monotonic()
        limit = "rate"
        held: list[asyncio.Semaphore] = []
        try:
            async with asyncio.timeout(wait_s):
                if self._limiter is not None:
                    await self._limiter.acquire()
                limit = "concurrency"
                await self._slots.acquire()
                held.append(self._slots)
                limit = "pool"
                await pool.acquire()
                held.append(pool)
        except TimeoutError:
            for semaphore in held:
                semaphore.release()
            raise RateLimited(self._host, time.monotonic() - started, limit) from None
        except BaseException:
            for semaphore in held:
                semaphore.release()
            raise
        try:
            yield
        finally:
            for semaphore in held:
                semaphore.release()
