"""Reading from a PostgreSQL streaming replica (``CQRS_READ_DATABASE_URL``), the primary
whenever the replica cannot serve.

Each request is answered wholly by one database, chosen when it starts: the read models'
checkpoints replicate with their rows, so a consistency token is waited for on the database
that then answers (a request that checked the primary's checkpoint and read the replica's
rows could read behind its token). Every second the router measures the replica: in
recovery, reachable, and how far its replay is behind the primary, in bytes and in
seconds (how long ago the primary's WAL stood where the replica's replay stands now, from
the positions it sampled). Beyond ``CQRS_READ_REPLICA_MAX_LAG_MS``, or unreachable, the
replica is out of rotation and the primary answers; it comes back once measured within
the bound. We chose the primary over UNAVAILABLE: the primary can always answer, only
with more load on it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import Generic, TypeVar

import asyncpg

from common.cancellation import cancel_and_wait, raise_if_cancelled
from common.entities import Entity
from common.errors import Unavailable
from common.metrics import DB_READS, REPLICA_IN_ROTATION, REPLICA_LAG_BYTES, REPLICA_LAG_SECONDS
from read_server.sources.base import Freshness, Page, PageRequest, QuerySource, Where
from read_server.sources.waiting import POLL_INTERVAL_S, HeadCheck

log = logging.getLogger(__name__)

PRIMARY = "primary"
REPLICA = "replica"
_REPLICA_STATE = """
SELECT pg_is_in_recovery() AS standby, pg_last_wal_replay_lsn()::text AS replayed
"""
_PRIMARY_LSN = "SELECT pg_current_wal_lsn()::text"
# Whether every transaction up to $1 has been replayed here: $1 is below the snapshot's
# xmin. Not pg_visible_in_snapshot: on a hot standby pg_current_snapshot() lists no
# transaction in progress at all (PostgreSQL keeps them in the snapshot's subxip there), so
# that called a transaction still being replayed visible as soon as a later one had
# committed, and a token read answered the row from before it (seen in CI; tested).
_REPLAYED = "SELECT $1::bigint < pg_snapshot_xmin(pg_current_snapshot())::text::bigint"

T = TypeVar("T")


def lsn(text: str) -> int:
    """A ``pg_lsn`` (``16/B374D848``) as a byte position."""
    high, _, low = text.partition("/")
    return (int(high, 16) << 32) | int(low, 16)


@dataclass(frozen=True, slots=True)
class Lag:
    """How far the replica's replay is behind the primary."""

    bytes: int
    seconds: float


class LagClock:
    """Seconds behind, from the primary's WAL positions sampled over time: how long ago
    the primary stood where the replica's replay stands now (0: it has replayed all that
    was sampled). Keeps ``keep`` samples; further behind than the oldest is at least its
    age."""

    def __init__(self, keep: int) -> None:
        self._samples: deque[tuple[float, int]] = deque(maxlen=keep)

    def lag(self, now: float, primary: int, replayed: int) -> Lag:
        self._samples.append((now, primary))
        behind = [at for at, position in self._samples if position > replayed]
        seconds = now - behind[0] if behind else 0.0
        return Lag(max(primary - replayed, 0), seconds)


class ReplicaRouter:
    """Which database answers now: the replica while it is in rotation, else the primary."""

    def __init__(
        self,
        primary: asyncpg.Pool,
        replica: asyncpg.Pool,
        *,
        max_lag_s: float,
        every_s: float = 1.0,
    ) -> None:
        self._primary = primary
        self._replica = replica
        self._max_lag_s = max_lag_s
        self._every_s = every_s
        self._clock = LagClock(keep=int(max_lag_s / every_s) + 3)
        self.in_rotation = False  # until a measure shows it can serve
        self.lag: Lag | None = None
        self._task: asyncio.Task[None] | None = None
        REPLICA_IN_ROTATION.set(0)

    def choose(self, replica: T, primary: T) -> T:
        """``replica`` while the replica is in rotation, else ``primary`` (counted)."""
        name = REPLICA if self.in_rotation else PRIMARY
        DB_READS.labels(name).inc()
        return replica if self.in_rotation else primary

    async def measure(self) -> None:
        """One measure of the replica; puts it in or out of rotation."""
        try:
            async with asyncio.timeout(max(self._every_s, 1.0)):
                state = await self._replica.fetchrow(_REPLICA_STATE)
                primary = lsn(str(await self._primary.fetchval(_PRIMARY_LSN)))
        except Exception as exc:
            raise_if_cancelled()
            self._set(False, f"unreachable ({exc})")
            return
        if not state["standby"] or state["replayed"] is None:
            self._set(False, "not a streaming replica (not in recovery)")
            return
        lag = self._clock.lag(time.monotonic(), primary, lsn(state["replayed"]))
        self.lag = lag
        REPLICA_LAG_BYTES.set(lag.bytes)
        REPLICA_LAG_SECONDS.set(lag.seconds)
        within = lag.seconds <= self._max_lag_s
        self._set(within, "" if within else f"{lag.seconds:.1f} s behind")

    def _set(self, serving: bool, why: str) -> None:
        if serving != self.in_rotation:
            if serving:
                log.info("read replica in rotation")
            else:
                log.warning("read replica out of rotation: %s; reading the primary", why)
        self.in_rotation = serving
        REPLICA_IN_ROTATION.set(1 if serving else 0)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="replica-router")

    async def _run(self) -> None:
        while True:
            await self.measure()
            await asyncio.sleep(self._every_s)

    async def close(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)


class ReplicaCommits:
    """The write model read on the replica (the live tables, replicated): a consistency
    token is reached once the replica has replayed the token's transaction and every one
    before it (below its snapshot's xmin: the commit-safe order the projector reads in),
    waited for like a projection's checkpoint, within the request's budget."""

    def __init__(self, replica: asyncpg.Pool, check_head: HeadCheck) -> None:
        self._replica = replica
        self._check_head = check_head

    async def wait(self, freshness: Freshness) -> None:
        wanted = freshness.position
        if wanted is None or await self._replayed(wanted.xid):
            return
        budget = asyncio.timeout(freshness.max_wait_s)
        try:
            async with budget:
                await self._check_head(wanted)  # a token from the future: INVALID_ARGUMENT
                while True:
                    await asyncio.sleep(POLL_INTERVAL_S)
                    if await self._replayed(wanted.xid):
                        return
        except TimeoutError:
            if not budget.expired():
                raise
        waited_ms = max(0, round(freshness.max_wait_s * 1000))
        raise Unavailable(
            f"the read replica has not replayed the consistency token's transaction within "
            f"{waited_ms} ms"
        )

    async def _replayed(self, xid: int) -> bool:
        return bool(await self._replica.fetchval(_REPLAYED, xid))


class Routed(Generic[T]):
    """A pair of the same thing over each database; :meth:`now` the one to use now."""

    def __init__(self, router: ReplicaRouter, replica: T, primary: T) -> None:
        self._router = router
        self.replica = replica
        self.primary = primary

    def now(self) -> T:
        return self._router.choose(self.replica, self.primary)


class RoutedSource:
    """A :class:`QuerySource` answering each call from the source over the database the
    router chooses when the call starts (token wait and rows from the same database)."""

    def __init__(self, sources: Routed[QuerySource]) -> None:
        self._sources = sources

    async def get(self, entity: Entity, ident: str, freshness: Freshness) -> bytes | None:
        return await self._sources.now().get(entity, ident, freshness)

    async def list(
        self, entity: Entity, page: PageRequest, where: Where, freshness: Freshness
    ) -> Page:
        return await self._sources.now().list(entity, page, where, freshness)
