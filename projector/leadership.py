"""Runner leadership: one PostgreSQL session advisory lock per projection.

The lock lives on a dedicated connection: it is held exactly as long as that
session lives, so a crashed or partitioned runner loses it and a hot standby
(polling ``pg_try_advisory_lock``) takes over. The leader re-checks the
connection before every batch; the checkpoint compare-and-set in every store is
the second line of defence should two runners ever overlap.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging

import asyncpg

from projector.errors import LeadershipLost
from projector.wakeup import sleep_unless

log = logging.getLogger(__name__)


def lock_key(projection: str) -> int:
    """A stable signed 64-bit advisory lock key for ``projection``."""
    digest = hashlib.blake2b(f"cqrs-projector:{projection}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class AdvisoryLease:
    """Acquire / check / release the advisory lock of one projection."""

    def __init__(
        self,
        dsn: str,
        projection: str,
        *,
        retry_interval: float,
        check_timeout: float = 5.0,
    ) -> None:
        self.projection = projection
        self.key = lock_key(projection)
        self._dsn = dsn
        self._retry = retry_interval
        self._check_timeout = check_timeout
        self._conn: asyncpg.Connection | None = None
        self.held = False

    @property
    def backend_pid(self) -> int | None:
        """The PostgreSQL backend holding (or trying for) the lock (tests, diagnostics)."""
        return self._conn.get_server_pid() if self._conn is not None else None

    async def acquire(self, stop: asyncio.Event) -> bool:
        """Wait until the lock is ours (True) or ``stop`` is set (False)."""
        waiting_logged = False
        while not stop.is_set():
            try:
                if self._conn is None or self._conn.is_closed():
                    self._conn = await asyncpg.connect(
                        self._dsn,
                        server_settings={"application_name": f"cqrs-projector:{self.projection}"},
                    )
                if await self._conn.fetchval("SELECT pg_try_advisory_lock($1)", self.key):
                    self.held = True
                    log.info("%s: leading", self.projection)
                    return True
                if not waiting_logged:
                    log.info("%s: another runner leads; standing by", self.projection)
                    waiting_logged = True
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("%s: lock connection failed: %s", self.projection, exc)
                await self._drop()
            await sleep_unless(stop, self._retry)
        return False

    async def check(self) -> None:
        """Raise :class:`LeadershipLost` unless the lock session is provably alive."""
        conn = self._conn
        if not self.held or conn is None or conn.is_closed():
            raise LeadershipLost(self.projection)
        try:
            async with asyncio.timeout(self._check_timeout):
                await conn.fetchval("SELECT 1")
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            self.held = False
            await self._drop()
            raise LeadershipLost(self.projection) from exc

    async def release(self) -> None:
        """Give the lock up (closing the session releases it)."""
        self.held = False
        await self._drop()

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None or conn.is_closed():
            return
        with contextlib.suppress(Exception):
            async with asyncio.timeout(2):
                await conn.close()
        if not conn.is_closed():
            conn.terminate()
