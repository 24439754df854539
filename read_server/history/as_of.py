"""Time travel: a product, customer or order as it was at an instant, rebuilt by
replaying its events through the projector's reducers (``common.entities``).

"As it was at T" is the aggregate after its events, in version order, up to the first
one that occurred after T (``common.event_log.stream_events_as_of``).

Documents that show another aggregate (an entity's ``embeds``): the live views (write
model, projections) show an order's customer's *current* name and email. As of T, an
order shows them as they were at T: the name and email its ``OrderPlaced`` copied, then
every ``CustomerUpdated`` of its customer that came after the placement in the log and
occurred by T, applied with the projector's own fan-out (the embed's ``apply``). So ``GetOrderAsOf`` with T = now equals
``GetOrder``, and an earlier T shows the order exactly as a reader saw it then.

Cost: the fold starts from the newest snapshot before the instant (``read.snapshots``,
written every ``CQRS_SNAPSHOT_EVERY`` events of an aggregate by the projector,
:mod:`common.snapshots`), so at most that many events are replayed however long the
history; events are streamed through a cursor and folded one by one; ``max_events``
bounds the events folded per aggregate (:class:`TooManyEvents` past it), which bounds the
CPU time of a call.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from datetime import datetime

import asyncpg
from google.protobuf.message import Message

from common import snapshots
from common.entities import ENTITIES, reduce_document
from common.entities._model import field_text
from common.event_log import stream_events_as_of
from common.events import StoredEvent
from common.positions import Position


class TooManyEvents(Exception):
    """The aggregate has more events up to the instant than one call may replay."""

    def __init__(self, aggregate_type: str, ident: str, limit: int) -> None:
        super().__init__(f"{aggregate_type} {ident}: more than {limit} events")
        self.aggregate_type = aggregate_type
        self.ident = ident
        self.limit = limit


@dataclass(frozen=True, slots=True)
class Replayed:
    """The document as of the instant (``None``: not created yet, or deleted), and when
    it was deleted if its last event up to then was its deletion."""

    document: Message | None
    deleted_at: datetime | None


def replay(events: Iterable[StoredEvent]) -> Replayed:
    """Fold one aggregate's events (version order) with the shared reducers."""
    fold = _Fold()
    for event in events:
        fold.add(event)
    return fold.replayed


async def as_of(
    conn: asyncpg.Connection,
    aggregate_type: str,
    ident: str,
    at: datetime,
    max_events: int = 0,
    from_snapshot: bool = True,
) -> Replayed:
    """The aggregate ``ident`` of ``aggregate_type`` as it was at ``at``. ``conn`` must be
    in a transaction, REPEATABLE READ for one consistent answer (an order reads its own
    events and its customer's); at most ``max_events`` (0: any number) are replayed of
    each aggregate, else :class:`TooManyEvents`. ``from_snapshot`` False replays from the
    first event (what the snapshots are measured and tested against)."""
    owner = next((e for e in ENTITIES if e.aggregate_type == aggregate_type), None)
    use = owner is not None and from_snapshot
    snapshot = await snapshots.before_cut(conn, aggregate_type, ident, at) if use else None
    fold = _Fold(owner.document if owner else None, snapshot)
    after = snapshot.version if snapshot is not None else 0
    async for event in _capped(conn, aggregate_type, ident, at, max_events, after):
        fold.add(event)
    doc = fold.replayed.document
    if doc is None or owner is None or not owner.embeds:
        return fold.replayed
    created = await _created(conn, ident, fold)
    for embed in owner.embeds:
        shown = field_text(doc, embed.by)
        async for event in _capped(conn, embed.aggregate_type, shown, at, max_events):
            if event.position > created and embed.changes(event):
                doc = embed.apply(doc, event)
    return Replayed(doc, None)


class _Fold:
    """The document after each event added (from ``snapshot``'s, if any), and whether
    the last one deleted it."""

    def __init__(
        self, document: type[Message] | None = None, snapshot: snapshots.Snapshot | None = None
    ) -> None:
        self.first: StoredEvent | None = None
        self._doc: Message | None = None
        self._deleted_at: datetime | None = None
        if snapshot is not None and document is not None:
            if snapshot.doc is None:
                self._deleted_at = snapshot.occurred_at
            else:
                self._doc = document.FromString(snapshot.doc)

    def add(self, event: StoredEvent) -> None:
        if self.first is None:
            self.first = event
        self._doc = reduce_document(self._doc, event)
        self._deleted_at = event.occurred_at if self._doc is None else None

    @property
    def replayed(self) -> Replayed:
        return Replayed(self._doc, self._deleted_at)


async def _created(conn: asyncpg.Connection, ident: str, fold: _Fold) -> Position:
    """Where the aggregate's creating event (version 1) stands in the log."""
    if fold.first is not None and fold.first.aggregate_version == 1:
        return fold.first.position
    row = await conn.fetchrow(_CREATED, ident)
    assert row is not None  # a snapshot exists: so does the event that created it
    return Position(row["xid"], row["seq"])


_CREATED = """
SELECT xid::text::bigint AS xid, seq FROM events
WHERE aggregate_id = $1::uuid AND aggregate_version = 1
"""


async def _capped(
    conn: asyncpg.Connection,
    aggregate_type: str,
    ident: str,
    at: datetime,
    limit: int,
    after_version: int = 0,
) -> AsyncIterator[StoredEvent]:
    """The aggregate's events up to ``at`` (after ``after_version``); :class:`TooManyEvents`
    once past ``limit``."""
    count = 0
    async for event in stream_events_as_of(conn, aggregate_type, ident, at, after_version):
        count += 1
        if limit and count > limit:
            raise TooManyEvents(aggregate_type, ident, limit)
        yield event
