"""``cqrs_outbox_backlog_events``: committed events the slowest projection has not applied.

A background task of the write server (never per RPC) reads every live projection's
checkpoint (:mod:`common.projection_checkpoints`: PostgreSQL rows, Redis active
generations) every few seconds, takes the lowest and counts the committed events after
it in commit-safe order, capped at :data:`common.event_log.COUNT_CAP`. Events of every
type count (the write server does not know which types each projection reads), so it
is an upper bound while a projection that filters types is catching up; a caught-up
projection's checkpoint is the log's horizon, so then it is exact. Projections never
built are left out; before any is built, every committed event is backlog.
"""

from __future__ import annotations

import asyncio
import logging

from common.cancellation import cancel_and_wait, raise_if_cancelled
from common.event_log import Executor, count_all_after
from common.metrics import OUTBOX_BACKLOG
from common.positions import ORIGIN
from common.projection_checkpoints import RedisCheckpoints, pg_checkpoints

log = logging.getLogger(__name__)

REFRESH_S = 5.0


class Backlog:
    """Keeps :data:`~common.metrics.OUTBOX_BACKLOG` current while started."""

    def __init__(
        self, db: Executor, redis: RedisCheckpoints | None, *, interval: float = REFRESH_S
    ) -> None:
        self._db = db
        self._redis = redis
        self._interval = interval
        self._task: asyncio.Task[None] | None = None
        self._failing = False

    async def refresh(self) -> int:
        """Count the backlog now, set the gauge and return it."""
        checkpoints = await pg_checkpoints(self._db)
        if self._redis is not None:
            checkpoints.update(await self._redis.read())
        slowest = min(checkpoints.values(), default=ORIGIN)
        backlog = await count_all_after(self._db, slowest)
        OUTBOX_BACKLOG.set(backlog)
        return backlog

    def start(self) -> None:
        """Refresh now and every ``interval`` seconds until :meth:`close`."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="outbox-backlog")

    async def close(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)

    async def _run(self) -> None:
        while True:
            try:
                await self.refresh()
                if self._failing:
                    log.info("outbox backlog: counting again")
                self._failing = False
            except Exception as exc:
                raise_if_cancelled()
                # PostgreSQL or Redis out: keep the last value, say so once per outage.
                level = logging.DEBUG if self._failing else logging.WARNING
                log.log(level, "outbox backlog: cannot count it (%s: %s)", type(exc).__name__, exc)
                self._failing = True
            raise_if_cancelled()  # redis-py may swallow a cancellation (common.cancellation)
            await asyncio.sleep(self._interval)
