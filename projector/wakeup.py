"""Waking the runners early: a broadcast flag fed by a LISTEN connection.

NOTIFY is only a hint. Runners poll every ``projector_poll_interval_ms`` anyway,
so a lost notification or a dead LISTEN connection only delays them to the next
poll; the listener reconnects in the background.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import asyncpg

log = logging.getLogger(__name__)


class Wakeup:
    """Broadcast: every waiter holding a ticket taken before :meth:`fire` wakes up."""

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self.generation = 0  # how many times it fired (projector.feed: which reads are new)

    def ticket(self) -> asyncio.Event:
        """Take before looking for work, then :func:`wait_ticket` on it: a fire in
        between is not missed."""
        return self._event

    def fire(self) -> None:
        self.generation += 1
        self._event.set()
        self._event = asyncio.Event()


# asyncio.timeout() rather than asyncio.wait_for() throughout: on Python 3.11 wait_for can
# swallow a cancellation that races with the awaited call finishing, and a runner that
# ignores its cancellation never stops.


async def wait_ticket(ticket: asyncio.Event, seconds: float) -> None:
    """Wait until the ticket fires or ``seconds`` pass."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await ticket.wait()


async def sleep_unless(stop: asyncio.Event, seconds: float) -> None:
    """Sleep ``seconds``, returning early when ``stop`` is set."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await stop.wait()


class NotifyListener:
    """LISTENs on ``channel`` and fires ``wakeup`` on every notification; reconnects."""

    def __init__(
        self,
        dsn: str,
        channel: str,
        wakeup: Wakeup,
        *,
        retry_interval: float = 1.0,
        health_interval: float = 5.0,
    ) -> None:
        self._dsn = dsn
        self._channel = channel
        self._wakeup = wakeup
        self._retry = retry_interval
        self._health = health_interval
        self.connected = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        """Until ``stop``: listen, and reconnect after ``retry_interval`` when the connection dies."""
        while not stop.is_set():
            try:
                await self._listen(stop)
            except Exception as exc:  # any failure just means "reconnect"; polling covers us
                log.warning("LISTEN %s connection lost: %s; reconnecting", self._channel, exc)
            self.connected.clear()
            await sleep_unless(stop, self._retry)

    async def _listen(self, stop: asyncio.Event) -> None:
        conn = await asyncpg.connect(
            self._dsn, server_settings={"application_name": "cqrs-projector-listen"}
        )
        lost = asyncio.Event()
        try:
            conn.add_termination_listener(lambda _conn: lost.set())
            await conn.add_listener(self._channel, self._on_notify)
            self.connected.set()
            self._wakeup.fire()  # notifications sent while disconnected are gone
            while not stop.is_set() and not lost.is_set():
                await wait_any((stop, lost), self._health)
                if not stop.is_set() and not lost.is_set():
                    # A half-open TCP connection would otherwise look alive forever.
                    async with asyncio.timeout(self._health):
                        await conn.fetchval("SELECT 1")
            if lost.is_set() and not stop.is_set():
                raise ConnectionError("connection terminated")
        finally:
            if not conn.is_closed():
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(2):
                        await conn.close()
                if not conn.is_closed():
                    conn.terminate()

    def _on_notify(self, *_args: Any) -> None:
        self._wakeup.fire()


async def wait_any(events: tuple[asyncio.Event, ...], seconds: float) -> None:
    """Until any of ``events`` is set, or ``seconds`` pass."""
    tasks = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(tasks, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
