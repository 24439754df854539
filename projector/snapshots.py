"""``pg:snapshots``: keeps ``read.snapshots`` (:mod:`common.snapshots`), the document of an
aggregate after every ``every``-th of its events, so time travel replays at most
``every - 1`` events after one.

One PostgreSQL transaction per batch: lock and compare the checkpoint row, write a
snapshot for each event of the batch whose version is a multiple of ``every`` (the previous
snapshot, or nothing, folded forward with the aggregate's events up to it: at most
``every`` of them), and move the checkpoint. A snapshot is kept once (``ON CONFLICT DO
NOTHING``), and one that cannot be made (an event the reducers refuse) is skipped, not a
poison event: time travel then replays from the snapshot before.

Never rebuilt: snapshots are derived from the log and the consumer writes them as it
follows it, from the origin on its first start. It can be rewound (:meth:`SnapshotWriter.rewind`,
``cqrs projector rebuild --from``): the snapshots of the events after the position are
deleted and written again, the same, as it goes on.
"""

from __future__ import annotations

import logging

import asyncpg
from google.protobuf.message import Message

from common import snapshots
from common.entities import ENTITIES, reduce_document
from common.event_log import history_page
from common.events import StoredEvent
from common.positions import Position
from common.reducers import ReducerError
from projector.outbound import Outbound
from projector.outbox import Batch
from projector.rewind import Rewound
from projector.stores import pg_checkpoints

log = logging.getLogger(__name__)

NAME = "pg:snapshots"

# The snapshots of the events after position ($1, $2): a snapshot is the one of the event
# with its aggregate and version.
_DELETE_AFTER = f"""
DELETE FROM {snapshots.TABLE} s USING events e
WHERE e.aggregate_id = s.aggregate_id AND e.aggregate_version = s.aggregate_version
  AND (e.xid, e.seq) > ($1::bigint::text::xid8, $2::bigint)
"""


class SnapshotWriter(Outbound):
    """The consumer; a snapshot after every ``every``-th event of each aggregate."""

    not_rebuilt_because = "snapshots are derived from the log as it is followed"
    # An as-of read replays from the newest snapshot before its instant: one written up to
    # half a second later costs it a few more events meanwhile, never a wrong answer.
    linger_s = 0.5

    def __init__(self, pool: asyncpg.Pool, every: int) -> None:
        if every < 1:
            raise ValueError("a snapshot every 1 event at least")
        self._pool = pool
        self._every = every

    @property
    def name(self) -> str:
        return NAME

    @property
    def consumes(self) -> tuple[str, ...]:
        return tuple(e.aggregate_type for e in ENTITIES)

    @property
    def event_types(self) -> None:
        return None

    async def apply(self, batch: Batch) -> None:
        due = [e for e in batch.events if e.aggregate_version % self._every == 0]
        if not due:  # most batches: the checkpoint alone, one statement
            await self._advance(self._pool, batch)
            return
        async with self._pool.acquire() as conn, conn.transaction():
            await self._advance(conn, batch)
            for event in due:
                await _snapshot(conn, event)

    async def rewind(self, to: Position) -> Rewound:
        """Delete the snapshots of the events after ``to`` and move the checkpoint back to
        it, in one transaction; following on writes them again (each one is the fold of its
        aggregate's events up to it: the same bytes). Meanwhile as-of reads replay from the
        snapshot before, as they do for an aggregate with no snapshot yet."""
        async with self._pool.acquire() as conn, conn.transaction():
            previous = await pg_checkpoints.move_back(conn, NAME, to)
            status = await conn.execute(_DELETE_AFTER, to.xid, to.seq)
        return Rewound(previous, f"{int(status.split()[-1])} snapshots deleted")

    async def describe(self) -> str:
        await self.checkpoint()
        count = await self._pool.fetchval(f"SELECT count(*) FROM {snapshots.TABLE}")
        return f"{count} snapshots, one every {self._every} events of an aggregate"


async def _snapshot(conn: asyncpg.Connection, event: StoredEvent) -> None:
    """Write the aggregate's document after ``event`` (its events up to it are committed:
    the batch is below the log's horizon)."""
    before = await snapshots.below(conn, event.aggregate_id, event.aggregate_version)
    owner = next(e for e in ENTITIES if e.aggregate_type == event.aggregate_type)
    doc: Message | None = None
    start = 0
    if before is not None:
        start = before.version
        doc = owner.document.FromString(before.doc) if before.doc is not None else None
    # Its events after that snapshot, up to this one (the history's page query).
    since = await history_page(
        conn, event.aggregate_id, None, start, event.aggregate_version - start
    )
    try:
        for logged in since:
            doc = reduce_document(doc, logged.event)
    except ReducerError as exc:
        log.warning("%s: no snapshot of %s at version %d (%s)", NAME, event.aggregate_id,
                    event.aggregate_version, exc)  # fmt: skip
        return
    await conn.execute(
        snapshots.INSERT, event.aggregate_id, event.aggregate_version, event.aggregate_type,
        doc.SerializeToString() if doc is not None else None, event.occurred_at,
    )  # fmt: skip
