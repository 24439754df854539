"""The projector processes sharing the consumers, and each one's fair share of leases.

Every ``cqrs projector run`` process (on one host or many) joins by holding one *shared*
advisory lock on a connection of its own and running a statement on it every
``lease_timeout / 5`` seconds. The live members are the sessions holding that lock that
are running a statement or ran one within ``lease_timeout``: a process that dies loses its
session (and the lock) with it, and one that is frozen stops counting once it has been
silent for ``lease_timeout``, exactly as its consumer leases are then broken
(:mod:`projector.leadership`).

Each process leads at most ``ceil(units / live members)`` of the consumers it runs (the
units; every process is expected to run the same ones): a runner takes its lease only
while its process is below its share, and a leader gives its lease back when a process
joined and the share shrank (those whose names sort last, so two processes never give up
the same ones in turn). The others' standbys, below their share, take them. Alone, a
process leads everything, as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math

import asyncpg

from common.metrics import PROJECTOR_PROCESSES, PROJECTOR_SHARE
from projector.leadership import lock_key, lock_parts
from projector.wakeup import sleep_unless

log = logging.getLogger(__name__)

_KEY = lock_key("members")
_PARTS = lock_parts(_KEY)
_SETTLE_S = 0.3
# Live members: the sessions holding the shared lock, busy or silent for at most $1 s.
_LIVE = """
SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted AND l.database = a.datid
  AND a.datname = current_database()
  AND l.classid = $2::bigint::oid AND l.objid = $3::bigint::oid AND l.objsubid = 1
  AND (a.state = 'active' OR clock_timestamp() - a.state_change <= make_interval(secs => $1))
"""


class Membership:
    """This process's place among the projector processes: :meth:`run` keeps it a member
    and counts the live ones; runners :meth:`claim` a place before trying for a lease and ask
    :meth:`must_yield` while leading."""

    def __init__(self, dsn: str, units: int, *, lease_timeout: float) -> None:
        self._dsn = dsn
        self._units = max(units, 1)
        self._timeout = lease_timeout
        self._every = lease_timeout / 5
        self.live = 1  # until counted: alone
        self.leading: set[str] = set()  # the consumers this process leads now
        self.building: set[str] = set()  # those of them being built from the log
        self.joined = asyncio.Event()  # counted twice, _SETTLE_S apart

    @property
    def share(self) -> int:
        """How many consumers this process may lead."""
        return _share(self._units, self.live)

    def claim(self, name: str) -> bool:
        """Whether the runner of ``name`` may try for its lease now; if so it counts as
        leading until :meth:`drop` (claimed before the try, so runners trying at once
        cannot all pass the same check)."""
        if name not in self.leading and len(self.leading) >= self.share:
            return False
        self.leading.add(name)
        return True

    def drop(self, name: str) -> None:
        """``name`` is not led here (its try failed, or it gave its lease back)."""
        self.leading.discard(name)

    def must_yield(self, name: str) -> bool:
        """Whether the leader of ``name`` should give its lease back: its process leads
        more than its share and ``name`` is one of those that sort last, those being built
        (:attr:`building`) counted first, so a build is never thrown away to make room:
        it gives way once it is done, if it still has to."""
        surplus = len(self.leading) - self.share
        if surplus <= 0 or name in self.building:
            return False
        order = sorted(self.leading & self.building) + sorted(self.leading - self.building)
        return name in order[-surplus:]

    async def run(self, stop: asyncio.Event) -> None:
        """Be a member until ``stop``: rejoin after a lost connection (meanwhile counting
        on the last number seen: the leases themselves stay safe)."""
        while not stop.is_set():
            try:
                await self._member(stop)
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("projector membership connection lost: %s; rejoining", exc)
            self.joined.clear()
            await sleep_unless(stop, self._every)

    async def _member(self, stop: asyncio.Event) -> None:
        conn = await asyncpg.connect(
            self._dsn, server_settings={"application_name": "cqrs-projector-member"}
        )
        try:
            await conn.execute("SELECT pg_advisory_lock_shared($1)", _KEY)
            settling = False
            while not stop.is_set():
                async with asyncio.timeout(self._timeout / 2):
                    live = int(await conn.fetchval(_LIVE, self._timeout, *_PARTS))
                if live != self.live:
                    share = _share(self._units, live)
                    log.info("projector processes: %d; this one leads up to %d", live, share)
                self.live = max(live, 1)
                PROJECTOR_PROCESSES.set(self.live)
                PROJECTOR_SHARE.set(self.share)
                if not self.joined.is_set() and not settling:
                    # Processes started together (`cqrs up --projectors N`) join within
                    # moments of each other: count again before anyone takes a lease, so
                    # the first does not take them all and build them alone.
                    settling = True
                    await sleep_unless(stop, _SETTLE_S)
                    continue
                self.joined.set()
                await sleep_unless(stop, self._every)
        finally:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2):
                    await conn.close()
            if not conn.is_closed():
                conn.terminate()


def _share(units: int, live: int) -> int:
    return math.ceil(units / max(live, 1))
