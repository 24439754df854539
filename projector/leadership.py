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

# The leases this session holds (bigint advisory locks show with objsubid 1).
_MINE = """
SELECT classid::bigint AS classid, objid::bigint AS objid FROM pg_locks
WHERE locktype = 'advisory' AND pid = pg_backend_pid() AND granted AND objsubid = 1
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


def lease_session_name(name: str = "") -> str:
    """The ``application_name`` of the session holding leases: the consumer (for a session
    of its own) and the process (``host/pid``), so ``cqrs projector status`` and
    ``pg_stat_activity`` tell which projector process leads it."""
    owner = f":{name}" if name else "-leases"
    return f"cqrs-projector{owner} {socket.gethostname()}/{os.getpid()}"[:63]


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


class LeaseSession:
    """The PostgreSQL session holding the leases of one projector process (or of one
    lease, when none is shared): every consumer's advisory lock on one connection, and one
    heartbeat proving every ``lease_timeout / 5`` which of them it still holds.

    One session per process, not one per consumer: a process leads many consumers (and
    segments), and a connection each spent most of PostgreSQL's connection budget on
    idle lock holders. Nothing is lost by sharing: a frozen process freezes every heartbeat
    at once anyway, and a standby breaking a frozen holder ends that one session.
    Statements on it take turns (one asyncpg connection runs one at a time).
    """

    def __init__(self, dsn: str, application_name: str, *, lease_timeout: float) -> None:
        self.dsn = dsn
        self._name = application_name
        self._timeout = lease_timeout
        self._beat_every = lease_timeout / 5
        self._conn: asyncpg.Connection | None = None
        self._turn = asyncio.Lock()
        self._held: dict[tuple[int, int], AdvisoryLease] = {}
        self._heartbeat: asyncio.Task[None] | None = None
        self.epoch = 0  # grows with every new connection: a lease of an older one is gone
        # Rebuild locks taken on this session (projector.rebuild.rebuild_lock): a session
        # lock is re-entrant, so the runners sharing it keep them apart here.
        self.rebuilding: set[int] = set()

    @property
    def connected(self) -> bool:
        return self._conn is not None and not self._conn.is_closed()

    @property
    def backend_pid(self) -> int | None:
        return self._conn.get_server_pid() if self._conn is not None else None

    async def fetch(self, query: str, *args: object) -> list[asyncpg.Record]:
        """Run ``query`` on the session (connecting first if needed)."""
        async with self._turn:
            if not self.connected:
                self._conn = await asyncpg.connect(
                    self.dsn,
                    timeout=self._timeout,
                    server_settings={"application_name": self._name},
                )
                self.epoch += 1
            assert self._conn is not None
            async with asyncio.timeout(self._timeout / 2):
                rows: list[asyncpg.Record] = await self._conn.fetch(query, *args)
            return rows

    async def fetchval(self, query: str, *args: object) -> object:
        rows = await self.fetch(query, *args)
        return rows[0][0] if rows else None

    def hold(self, lease: AdvisoryLease) -> None:
        """``lease``'s lock was just taken on this session: beat for it from now on."""
        self._held[lease.parts] = lease
        if self._heartbeat is None or self._heartbeat.done():
            self._heartbeat = asyncio.create_task(self._beat(), name=f"lease-{self._name}")

    async def unhold(self, lease: AdvisoryLease) -> None:
        """Give ``lease``'s lock back (the session stays, for the others it holds)."""
        if self._held.get(lease.parts) is not lease:
            return
        del self._held[lease.parts]
        if not self.connected:
            return
        try:
            await self.fetchval("SELECT pg_advisory_unlock($1)", lease.key)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("%s: unlock failed (%s); ending the session", lease.name, exc)
            await self.reset()

    async def reset(self) -> None:
        """End the session: every lock it holds goes with it."""
        for lease in list(self._held.values()):
            lease.held = False
        self._held.clear()
        beat, self._heartbeat = self._heartbeat, None
        if beat is not None and beat is not asyncio.current_task():
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await beat
        async with self._turn:
            conn, self._conn = self._conn, None
        if conn is None or conn.is_closed():
            return
        with contextlib.suppress(Exception):
            async with asyncio.timeout(2):
                await conn.close()
        if not conn.is_closed():
            conn.terminate()

    async def _beat(self) -> None:
        """While it holds any lock: prove every few seconds which ones are still ours."""
        try:
            while self._held:
                await asyncio.sleep(self._beat_every)
                rows = await self.fetch(_MINE)
                mine = {(int(r["classid"]), int(r["objid"])) for r in rows}
                now = time.monotonic()
                for parts, lease in list(self._held.items()):
                    if parts in mine:
                        lease.beat_at = now
                    else:
                        log.warning("%s: the lock is no longer held by this session", lease.name)
                        lease.held = False
                        del self._held[parts]
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            # Whether the locks are still held cannot be told: end the session, so they are
            # not (a standby may take them), and the leases know they are lost.
            log.warning("%s: lease heartbeat failed: %s", self._name, exc)
            await self.reset()


class AdvisoryLease:
    """Acquire / check / release the advisory lock of one consumer, on ``session`` (the
    process's; default: a session of its own)."""

    def __init__(
        self,
        dsn: str,
        name: str,
        *,
        retry_interval: float,
        lease_timeout: float = 10.0,
        session: LeaseSession | None = None,
    ) -> None:
        self.name = name
        self.key = lock_key(name)
        self.parts = lock_parts(self.key)
        self._own = session is None
        self.session = session or LeaseSession(
            dsn, lease_session_name(name), lease_timeout=lease_timeout
        )
        self._retry = retry_interval
        self._timeout = lease_timeout
        self._epoch = 0
        self.beat_at = 0.0  # when the session last proved the lock ours
        # cqrs_projection_leader: this process' leases of the consumer held (0 or 1; two
        # runners of one consumer in one process only happen in tests).
        self._leader = PROJECTION_LEADER.labels(*projection_labels(name))
        self._leader.inc(0)  # the series exists (0) in a standby too
        self._held = False

    @property
    def dsn(self) -> str:
        """The database the lease is held in (its other locks are taken there too)."""
        return self.session.dsn

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
        return self.session.backend_pid

    async def acquire(self, stop: asyncio.Event, share: Share | None = None) -> bool:
        """Wait until the lock is ours (True) or ``stop`` is set (False); try only while
        ``share`` lets this consumer claim a place (its process is below its fair share)."""
        waiting_logged = False
        while not stop.is_set():
            if share is not None and not share.claim(self.name):
                await sleep_unless(stop, self._retry)
                continue
            try:
                if await self.session.fetchval("SELECT pg_try_advisory_lock($1)", self.key):
                    self._lead()
                    return True
                if not waiting_logged:
                    log.info("%s: another runner leads; standing by", self.name)
                    waiting_logged = True
                await self._break_frozen_holder()
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("%s: lock connection failed: %s", self.name, exc)
                await self.session.reset()
            finally:
                if share is not None and not self.held:
                    share.drop(self.name)
            await sleep_unless(stop, self._retry)
        return False

    def check(self) -> None:
        """Raise :class:`LeadershipLost` unless the lock was provably ours very recently."""
        if (
            not self.held
            or not self.session.connected
            or self.session.epoch != self._epoch
            or time.monotonic() - self.beat_at > self._timeout
        ):
            self.held = False
            raise LeadershipLost(self.name)

    async def release(self) -> None:
        """Give the lock up (a session of its own is closed, which releases it)."""
        was_held, self.held = self.held, False
        if self._own:
            await self.session.reset()
        elif was_held or self.session.epoch == self._epoch:
            await self.session.unhold(self)

    def _lead(self) -> None:
        self.held = True
        self._epoch = self.session.epoch
        self.beat_at = time.monotonic()
        self.session.hold(self)
        log.info("%s: leading", self.name)

    async def _break_frozen_holder(self) -> None:
        """Terminate the holder's session if it has stopped beating (a frozen leader)."""
        rows = await self.session.fetch(_HOLDER, *self.parts)
        row = rows[0] if rows else None
        if row is None or row["state"] == "active" or row["idle_s"] <= self._timeout:
            return
        log.warning(
            "%s: the leader (backend %d) has been silent for %.1fs; taking over",
            self.name,
            row["pid"],
            row["idle_s"],
        )
        await self.session.fetchval("SELECT pg_terminate_backend($1)", row["pid"])
