"""The projector process: one runner per consumer, the NOTIFY listener and the log
feed they share."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Protocol

import asyncpg

from common.events import NOTIFY_CHANNEL
from common.settings import Settings
from projector.consumer import Consumer
from projector.failures import FailureLog
from projector.feed import LogFeed
from projector.leadership import AdvisoryLease, LeaseSession, lease_session_name
from projector.membership import Membership
from projector.parking import parking_for
from projector.runner import ConsumerRunner, Outcome, RunnerConfig
from projector.wakeup import NotifyListener, Wakeup

log = logging.getLogger(__name__)


def make_runner(
    settings: Settings,
    pool: asyncpg.Pool,
    failures: FailureLog,
    consumer: Consumer,
    wakeup: Wakeup,
    feed: LogFeed | None = None,
    membership: Membership | None = None,
    leases: LeaseSession | None = None,
) -> ConsumerRunner:
    """A runner for ``consumer``, configured from ``settings``, reading through ``feed``
    (the process's shared reader; default: one of its own), its lease held on ``leases``
    (the process's lease session; default: one of its own)."""
    poll = settings.seconds.projector_poll_interval
    return ConsumerRunner(
        consumer=consumer,
        db=pool,
        lease=AdvisoryLease(
            settings.asyncpg_dsn,
            consumer.name,
            retry_interval=poll,
            lease_timeout=settings.seconds.projector_lease_timeout,
            session=leases,
        ),
        failures=failures,
        wakeup=wakeup,
        config=RunnerConfig(batch_size=settings.projector_batch_size, poll_interval=poll),
        feed=feed,
        membership=membership,
        parking=parking_for(consumer, pool, settings.projector_park),
    )


def process_leases(settings: Settings) -> LeaseSession:
    """The session that holds the leases of one projector process."""
    return LeaseSession(
        settings.asyncpg_dsn,
        lease_session_name(),
        lease_timeout=settings.seconds.projector_lease_timeout,
    )


class Service(Protocol):
    """Something else the projector process runs beside the runners until stopped (the
    webhook dispatcher), under a lease of its own."""

    name: str
    state: str  # for /healthz, like a runner's

    @property
    def leading(self) -> bool:
        """Whether it holds its lease now."""
        ...

    async def run(self, stop: asyncio.Event) -> None: ...


class Background(Protocol):
    """Work beside the runners that follows their leadership (the continuous audit)."""

    async def run(self, stop: asyncio.Event) -> None: ...


class Projector:
    """Runs every consumer (and the services given) until stopped, woken early by NOTIFY;
    ``audit`` makes the continuous audit of its runners (:mod:`projector.audit`)."""

    def __init__(
        self,
        settings: Settings,
        pool: asyncpg.Pool,
        failures: FailureLog,
        consumers: Sequence[Consumer],
        services: Sequence[Service] = (),
        leases: LeaseSession | None = None,
        audit: Callable[[Sequence[ConsumerRunner]], Background] | None = None,
    ) -> None:
        # One PostgreSQL session holds every lease of the process (projector.leadership).
        self.leases = leases or process_leases(settings)
        self.wakeup = Wakeup()
        self.listener = NotifyListener(settings.asyncpg_dsn, NOTIFY_CHANNEL, self.wakeup)
        # One reader of the log for every runner of the process (projector.feed).
        self.feed = LogFeed(pool, consumers, generation=self.wakeup)
        # Sharing the consumers with the other projector processes (projector.membership).
        self.membership = (
            Membership(
                settings.asyncpg_dsn,
                len(consumers),
                lease_timeout=settings.seconds.projector_lease_timeout,
            )
            if settings.projector_fair_share
            else None
        )
        self.runners = [
            make_runner(
                settings, pool, failures, c, self.wakeup, self.feed, self.membership, self.leases
            )
            for c in consumers
        ]
        self.services = list(services)
        self.audit = audit(self.runners) if audit is not None else None

    async def run(self, stop: asyncio.Event) -> dict[str, Outcome]:
        """Run every runner until ``stop`` is set (or every one has failed)."""
        listener = asyncio.create_task(self.listener.run(stop), name="projector-listen")
        member = asyncio.create_task(
            self.membership.run(stop) if self.membership else stop.wait(), name="projector-member"
        )
        tasks = {
            r.name: asyncio.create_task(r.run(stop), name=f"projector-{r.name}")
            for r in self.runners
        }
        waker = asyncio.create_task(self._wake_on(stop))
        # Its own task: it only ever waits on its own statements, never a runner on it.
        audit = asyncio.create_task(
            self.audit.run(stop) if self.audit else stop.wait(), name="projector-audit"
        )
        services = [
            asyncio.create_task(s.run(stop), name=f"projector-{s.name}") for s in self.services
        ]
        try:
            # Until every runner has ended (stopped, or failed: the exit status says so); a
            # process of services alone (`--only webhooks:dispatch`) until they end.
            if tasks:
                await asyncio.wait(tasks.values())
            if services and (stop.is_set() or not tasks):
                await asyncio.wait(services)  # stopping: each finishes what it is doing
        finally:
            for task in (*tasks.values(), *services, listener, member, waker, audit):
                task.cancel()
            await asyncio.gather(
                *tasks.values(), *services, listener, member, waker, audit, return_exceptions=True
            )
            await self.feed.aclose()
            await self.leases.reset()  # every lease released (each runner gave its own back)
            for task in services:
                if not task.cancelled() and task.exception() is not None:
                    log.error("%s crashed", task.get_name(), exc_info=task.exception())
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
