"""Composition root: builds pools, stores, runners and the NOTIFY listener from Settings.

Nothing is created at import time; one asyncpg pool and one Redis connection pool
per process, shared by every store and runner.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass

import asyncpg
from redis.asyncio import Redis

from common.events import NOTIFY_CHANNEL
from common.settings import Settings
from projector.failures import FailureLog
from projector.leadership import AdvisoryLease
from projector.projections import ALL_PROJECTIONS, PG, REDIS, parse_projection
from projector.runner import Outcome, ProjectionRunner, RunnerConfig
from projector.stores.pg_store import PgProjectionStore
from projector.stores.port import ProjectionStore
from projector.stores.redis_store import RedisProjectionStore
from projector.wakeup import NotifyListener, Wakeup

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Resources:
    """The process's shared connections."""

    settings: Settings
    pool: asyncpg.Pool
    redis: Redis
    failures: FailureLog


@contextlib.asynccontextmanager
async def open_resources(settings: Settings) -> AsyncIterator[Resources]:
    """Open the PostgreSQL pool and the Redis client; close them on exit."""
    pool = await asyncpg.create_pool(
        settings.asyncpg_dsn,
        min_size=1,
        max_size=max(settings.db_pool_size, 2),
        server_settings=settings.pg_session_settings("cqrs-projector"),
    )
    redis = Redis.from_url(settings.redis_url)
    try:
        yield Resources(settings, pool, redis, FailureLog(pool))
    finally:
        await redis.aclose()
        await pool.close()


def make_store(resources: Resources, projection: str) -> ProjectionStore:
    """The live store of ``projection`` (e.g. ``redis:orders``)."""
    backend, kind = parse_projection(projection)
    if backend == REDIS:
        return RedisProjectionStore(resources.redis, resources.settings.redis_prefix, kind)
    assert backend == PG
    return PgProjectionStore(resources.pool, kind)


def make_runner(
    resources: Resources,
    projection: str,
    wakeup: Wakeup,
    *,
    store: ProjectionStore | None = None,
) -> ProjectionRunner:
    """A runner for ``projection`` (``store`` overrides the live store, e.g. a test wrapper)."""
    settings = resources.settings
    poll = settings.projector_poll_interval_ms / 1000
    _, kind = parse_projection(projection)
    return ProjectionRunner(
        kind=kind,
        store=store or make_store(resources, projection),
        db=resources.pool,
        lease=AdvisoryLease(settings.asyncpg_dsn, projection, retry_interval=poll),
        failures=resources.failures,
        wakeup=wakeup,
        config=RunnerConfig(batch_size=settings.projector_batch_size, poll_interval=poll),
    )


class Projector:
    """The projector process: one runner per projection plus the NOTIFY listener."""

    def __init__(self, resources: Resources, projections: Iterable[str] = ALL_PROJECTIONS) -> None:
        self.wakeup = Wakeup()
        self.listener = NotifyListener(resources.settings.asyncpg_dsn, NOTIFY_CHANNEL, self.wakeup)
        self.runners = [make_runner(resources, p, self.wakeup) for p in projections]

    async def run(self, stop: asyncio.Event) -> dict[str, Outcome]:
        """Run every runner until ``stop`` is set (or every one has failed)."""
        listener = asyncio.create_task(self.listener.run(stop), name="projector-listen")
        tasks = {
            r.name: asyncio.create_task(r.run(stop), name=f"projector-{r.name}")
            for r in self.runners
        }
        waker = asyncio.create_task(self._wake_on(stop))
        try:
            if tasks:
                await asyncio.wait(tasks.values())
        finally:
            for task in (*tasks.values(), listener, waker):
                task.cancel()
            await asyncio.gather(*tasks.values(), listener, waker, return_exceptions=True)
        outcomes: dict[str, Outcome] = {}
        for name, task in tasks.items():
            if task.cancelled() or task.exception() is not None:
                if not task.cancelled():
                    log.error("%s: runner crashed", name, exc_info=task.exception())
                outcomes[name] = Outcome.STOPPED
            else:
                outcomes[name] = task.result()
        return outcomes

    async def _wake_on(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self.wakeup.fire()  # sleeping runners notice the stop at once
