"""Runner leadership: one PostgreSQL session advisory lock per consumer, with a lease.

The lock lives on a dedicated connection, so a crashed or partitioned runner loses
it with its session and a hot standby (polling ``pg_try_advisory_lock``) takes
over. A *frozen* leader (SIGSTOP, a stuck event loop) keeps its session open, so
the lock alone would stall the consumer forever; hence a heartbeat: the leader
re-checks that it still holds the lock every ``lease_timeout / 5`` seconds on the
lock session, and a standby that sees that session idle for longer than
``lease_timeout`` terminates it and takes the lock. The frozen leader, once it
wakes, finds its session gone and stands by. The checkpoint compare-and-set in
every store is the second line of defence should two runners ever overlap.

:meth:`AdvisoryLease.check` costs no round trip: it asks whether the last
heartbeat succeeded recently enough.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import socket
import time
from collections.abc import Iterable
from typing import Protocol

import asyncpg

from common.event_log import Executor
from common.metrics import PROJECTION_LEADER, projection_labels
from projector.errors import LeadershipLost
from projector.wakeup import sleep_unless

log = logging.getLogger(__name__)

_HOLDS = """
SELECT EXISTS (
  SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid() AND granted
    AND classid = $1::bigint::oid AND objid = $2::bigint::oid AND objsubid = 1)
"""
# The session holding the lock, and how long it has been idle (its last statement ended).
_HOLDER = """
SELECT a.pid, a.state, extract(epoch FROM clock_timestamp() - a.state_change)::float8 AS idle_s
FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted AND l.database = a.datid
  AND l.classid = $1::bigint::oid AND l.objid = $2::bigint::oid AND l.objsubid = 1
  AND a.datname = current_database()
"""


class Share(Protocol):
    """How many leases a process may hold (:class:`projector.membership.Membership`)."""

    def claim(self, name: str) -> bool:
        """Whether ``name`` may try for its lease now (counted as held if so)."""
        ...

    def drop(self, name: str) -> None:
        """``name``'s lease is not held (the try failed, or it was given back)."""
        ...


def lease_session_name(name: str) -> str:
    """The ``application_name`` of the session holding ``name``'s lease: the consumer and
    the process (``host/pid``), so ``cqrs projector status`` and ``pg_stat_activity`` tell
    which projector process leads it."""
    return f"cqrs-projector:{name} {socket.gethostname()}/{os.getpid()}"[:63]


def leader_of(session_name: str) -> str:
    """The process (``host/pid``) in a :func:`lease_session_name`, or ``?``."""
    _, space, process = session_name.partition(" ")
    return process if space else "?"


# Which session holds each consumer's lease (by the lock's pg_locks parts).
_LEADERS = """
SELECT l.classid::bigint AS classid, l.objid::bigint AS objid, a.application_name
FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 AND l.mode = 'ExclusiveLock'
  AND a.datname = current_database()
"""


async def leaders(db: Executor, names: Iterable[str]) -> dict[str, str]:
    """The process leading each of ``names`` (``host/pid``), for those led now."""
    wanted = {lock_parts(lock_key(name)): name for name in names}
    found: dict[str, str] = {}
    for row in await db.fetch(_LEADERS):
        name = wanted.get((row["classid"], row["objid"]))
        if name is not None:
            found[name] = leader_of(row["application_name"] or "")
    return found


def lock_key(name: str) -> int:
    """A stable signed 64-bit advisory lock key for ``name``."""
    digest = hashlib.blake2b(f"cqrs-projector:{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def lock_parts(key: int) -> tuple[int, int]:
    """(classid, objid) under which pg_locks shows a bigint advisory lock."""
    unsigned = key & 0xFFFF_FFFF_FFFF_FFFF
    return unsigned >> 32, unsigned & 0xFFFF_FFFF


class AdvisoryLease:
    """Acquire / check / release the advisory lock of one consumer."""

    def __init__(
        self,
        dsn: str,
        name: str,
        *,
        retry_interval: float,
        lease_timeout: float = 10.0,
    ) -> None:
        self.name = name
        self.key = lock_key(name)
        self._parts = lock_parts(self.key)
        self._dsn = dsn
        self._retry = retry_interval
        self._timeout = lease_timeout
        self._beat_every = lease_timeout / 5
        self._conn: asyncpg.Connection | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        self._beat_at = 0.0
        # cqrs_projection_leader: this process' leases of the consumer held (0 or 1; two
        # runners of one consumer in one process only happen in tests).
        self._leader = PROJECTION_LEADER.labels(*projection_labels(name))
        self._leader.inc(0)  # the series exists (0) in a standby too
        self._held = False

    @property
    def dsn(self) -> str:
        """The database the lease is held in (its other locks are taken there too)."""
        return self._dsn

    @property
    def held(self) -> bool:
        """Whether this runner holds the lock (as far as it knows: see :meth:`check`)."""
        return self._held

    @held.setter
    def held(self, value: bool) -> None:
        if value != self._held:
            self._leader.inc(1 if value else -1)
        self._held = value

    @property
    def backend_pid(self) -> int | None:
        """The PostgreSQL backend holding (or trying for) the lock (tests, diagnostics)."""
        return self._conn.get_server_pid() if self._conn is not None else None

    async def acquire(self, stop: asyncio.Event, share: Share | None = None) -> bool:
        """Wait until the lock is ours (True) or ``stop`` is set (False); try only while
        ``share`` lets this consumer claim a place (its process is below its fair share)."""
        waiting_logged = False
        while not stop.is_set():
            if share is not None and not share.claim(self.name):
                await sleep_unless(stop, self._retry)
                continue
            try:
                if await self._try():
                    return True
                if not waiting_logged:
                    log.info("%s: another runner leads; standing by", self.name)
                    waiting_logged = True
                assert self._conn is not None
                await self._break_frozen_holder(self._conn)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("%s: lock connection failed: %s", self.name, exc)
                await self._drop()
            finally:
                if share is not None and not self.held:
                    share.drop(self.name)
            await sleep_unless(stop, self._retry)
        return False

    async def _try(self) -> bool:
        if self._conn is None or self._conn.is_closed():
            self._conn = await asyncpg.connect(
                self._dsn, server_settings={"application_name": lease_session_name(self.name)}
            )
        if await self._conn.fetchval("SELECT pg_try_advisory_lock($1)", self.key):
            self._lead()
            return True
        return False

    def check(self) -> None:
        """Raise :class:`LeadershipLost` unless the lock was provably ours very recently."""
        conn = self._conn
        if (
            not self.held
            or conn is None
            or conn.is_closed()
            or time.monotonic() - self._beat_at > self._timeout
        ):
            self.held = False
            raise LeadershipLost(self.name)

    async def release(self) -> None:
        """Give the lock up (closing the session releases it)."""
        self.held = False
        beat, self._heartbeat = self._heartbeat, None
        if beat is not None:
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await beat
        await self._drop()

    def _lead(self) -> None:
        self.held = True
        self._beat_at = time.monotonic()
        self._heartbeat = asyncio.create_task(self._beat(), name=f"lease-{self.name}")
        log.info("%s: leading", self.name)

    async def _beat(self) -> None:
        """Until the lock is lost: prove every few seconds that it is still ours."""
        conn = self._conn
        assert conn is not None
        try:
            while True:
                await asyncio.sleep(self._beat_every)
                async with asyncio.timeout(self._timeout / 2):
                    holds = await conn.fetchval(_HOLDS, *self._parts)
                if not holds:
                    log.warning("%s: the lock is no longer held by this session", self.name)
                    break
                self._beat_at = time.monotonic()
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("%s: lease heartbeat failed: %s", self.name, exc)
        self.held = False

    async def _break_frozen_holder(self, conn: asyncpg.Connection) -> None:
        """Terminate the holder's session if it has stopped beating (a frozen leader)."""
        row = await conn.fetchrow(_HOLDER, *self._parts)
        if row is None or row["state"] == "active" or row["idle_s"] <= self._timeout:
            return
        log.warning(
            "%s: the leader (backend %d) has been silent for %.1fs; taking over",
            self.name,
            row["pid"],
            row["idle_s"],
        )
        await conn.fetchval("SELECT pg_terminate_backend($1)", row["pid"])

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None or conn.is_closed():
            return
        with contextlib.suppress(Exception):
            async with asyncio.timeout(2):
                await conn.close()
        if not conn.is_closed():
            conn.terminate()
