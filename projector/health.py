"""The projector's ``/healthz`` and ``/livez`` (served by :mod:`common.ops_http`).

``/healthz`` (readiness) answers 200 when the projector does its job: not stopping,
the database answers, and no consumer is stopped on a poison event; else 503. The
body says why, with one entry per consumer: ``role`` (leader: holds the consumer's
lease; standby: waits for it), ``state`` (following, rebuilding, retrying after an
error, standby, stopped-on-poison, stopped), ``checkpoint`` and ``lag_events`` (the
last count, as in ``cqrs_projection_lag_events``; null before the first); and one entry
per service (the webhook dispatcher) with its ``role`` and ``state``.

A consumer stopped on a poison event makes the projector unready on purpose: it will
not move on by itself, and an operator must look (``cqrs projector status``). A standby
is ready: it is what a standby is for. Parked aggregates (``park`` policy,
:mod:`projector.parking`) leave it ready but *degraded*: 200 with ``status``
``degraded: ...`` and ``parked`` per consumer, since every other aggregate goes on.

``/livez`` only asks the event loop to turn: a frozen loop fails it, a database outage
does not (a restart would not help).

The checks run on the event loop (hopping from the HTTP thread, with a timeout) so
they read the runners' state between two of their steps, never in the middle of one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import asyncpg

from common.ops_http import Health
from projector.process import Service
from projector.runner import ConsumerRunner

CHECK_TIMEOUT_S = 3.0
_DB_TIMEOUT_S = 2.0


class ProjectorHealth:
    """Health checks of one projector process (call them from another thread)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        pool: asyncpg.Pool,
        runners: Sequence[ConsumerRunner],
        stop: asyncio.Event,
        services: Sequence[Service] = (),
    ) -> None:
        self._loop = loop
        self._pool = pool
        self._runners = list(runners)
        self._stop = stop
        self._services = list(services)

    def readiness(self) -> Health:
        """Ready or not, and the consumers' state (blocks the calling thread)."""
        return self._on_loop(self.report())

    def liveness(self) -> Health:
        """Whether the event loop still turns (blocks the calling thread)."""
        return self._on_loop(_alive())

    def _on_loop(self, check: Any) -> Health:
        future = asyncio.run_coroutine_threadsafe(check, self._loop)
        try:
            result: Health = future.result(CHECK_TIMEOUT_S)
        except TimeoutError:
            future.cancel()
            return Health(False, {"status": "event loop not answering"})
        return result

    async def report(self) -> Health:
        """The readiness answer (on the loop)."""
        consumers = {runner.name: _consumer(runner) for runner in self._runners}
        poisoned = sorted(n for n, c in consumers.items() if c["state"] == "stopped-on-poison")
        parked = {n: c["parked"] for n, c in consumers.items() if c.get("parked")}
        if self._stop.is_set():
            status = "stopping"
        elif not await self._database_answers():
            status = "database unreachable"
        elif poisoned:
            status = "stopped on a poison event: " + ", ".join(poisoned)
        elif parked:
            status = "degraded: parked aggregates in " + ", ".join(
                f"{n} ({count})" for n, count in sorted(parked.items())
            )
        else:
            status = "ok"
        services = {
            s.name: {"role": "leader" if s.leading else "standby", "state": s.state}
            for s in self._services
        }
        body = {"status": status, "consumers": consumers, "services": services}
        return Health(status == "ok" or status.startswith("degraded"), body)

    async def _database_answers(self) -> bool:
        try:
            async with asyncio.timeout(_DB_TIMEOUT_S):
                await self._pool.fetchval("SELECT 1")
        except Exception:
            return False
        return True


async def _alive() -> Health:
    return Health(True, {"status": "ok"})


def _consumer(runner: ConsumerRunner) -> dict[str, Any]:
    checkpoint = runner.checkpoint
    return {
        "role": "leader" if runner.leading else "standby",
        "state": runner.state,
        "checkpoint": None
        if checkpoint is None
        else {"xid": checkpoint.xid, "seq": checkpoint.seq},
        "lag_events": runner.lag_events,
        **({} if runner.parked is None else {"parked": runner.parked}),
    }
