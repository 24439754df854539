"""Documents the projector has parked (``read.parked_aggregates``, written by the
projector's ``park`` policy): a Get of one from the projection or the read model answers
FAILED_PRECONDITION with the reason instead of a document that silently stops before an
event. We chose the error over the last good document flagged stale: the Get replies carry
the document alone (no field to flag it in), and a client that must show something can
read it from ``SOURCE_WRITE_MODEL``, the truth.

The table is read again every ``REFRESH_S`` in the background (one small statement per
second per process; a Get never waits on it), so a park or an unpark shows in reads within
about a second. A failing read keeps the last set known. Lists and the orders that show a
parked customer are not flagged (docs/projector.md, "Parked aggregates").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

import asyncpg

from common.cancellation import raise_if_cancelled
from common.errors import FailedPrecondition

log = logging.getLogger(__name__)

REFRESH_S = 1.0
_ROWS = (
    "SELECT consumer, aggregate_type, aggregate_id, from_seq, event_type, event_version, error "
    "FROM read.parked_aggregates"
)


@dataclass(frozen=True, slots=True)
class _Parked:
    seq: int
    event_type: str
    version: int
    error: str


class ParkedDocuments:
    """The parked documents as last read; :meth:`check` refuses a read of one."""

    def __init__(self, pool: asyncpg.Pool, refresh_s: float = REFRESH_S) -> None:
        self._pool = pool
        self._refresh_s = refresh_s
        self._parked: dict[tuple[str, str, str], _Parked] = {}
        self._task: asyncio.Task[None] | None = None

    def check(self, consumer: str, aggregate_type: str, aggregate_id: str, label: str) -> None:
        """Raise FAILED_PRECONDITION if ``consumer`` (``redis:orders``) parked the aggregate."""
        if not self._parked:
            return
        parked = self._parked.get((consumer, aggregate_type, aggregate_id))
        if parked is None:
            return
        # Most useful first: the message is clipped (common.rpc.status), the reason last.
        raise FailedPrecondition(
            f"{label} {aggregate_id} is parked in {consumer} since its event seq={parked.seq} "
            f"({parked.event_type} v{parked.version}): read it from SOURCE_WRITE_MODEL until "
            f"`cqrs projector unpark {consumer} {aggregate_id}`; why: {parked.error}"
        )

    async def refresh(self) -> None:
        rows = await self._pool.fetch(_ROWS)
        self._parked = {
            (r["consumer"], r["aggregate_type"], r["aggregate_id"]): _Parked(
                r["from_seq"], r["event_type"], r["event_version"], r["error"][:300]
            )
            for r in rows
        }

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="read-parked")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                await self.refresh()
            except Exception as exc:
                raise_if_cancelled()
                log.debug("parked documents not read (keeping the last known): %s", exc)
            await asyncio.sleep(self._refresh_s)
