"""What one Watch stream sends: a document's (:func:`document_stream`) or the orders
feed's (:func:`orders_feed`), as the wire bytes of ``{Product,Customer,Order}Update``.

Every message carries a position (a consistency token): the document is its state as of
that position. A stream only moves forward: an update at or below the last position sent
is dropped, so the first document read and the hub's updates never repeat one another.
A resumed stream (``resume_after``) first closes the gap from the event log
(:mod:`read_server.watch.gaps`): nothing if the document did not change, a CHANGE if one
commit changed it (the current state is the next one), a RESYNC if several did (the
states in between are not kept by the projection).
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from common.entities import ORDERS, Entity
from common.errors import NotFound, Unavailable
from common.metrics import WATCH_FELL_BEHIND
from common.pb.shop.v1 import query_service_pb2 as qs
from common.positions import Position, encode_token
from read_server.sources.base import Freshness
from read_server.sources.projection import ProjectionSource
from read_server.watch.gaps import Gaps
from read_server.watch.hub import Doubt, Ending, FellBehind, Subscription, WatchHub, later
from read_server.wire import watch_update

SNAPSHOT, CHANGE, RESYNC = qs.WATCH_KIND_SNAPSHOT, qs.WATCH_KIND_CHANGE, qs.WATCH_KIND_RESYNC
DELETED = qs.WATCH_KIND_DELETED

# Orders a feed remembers having sent since it last synced; beyond, its next resync is a
# RESYNC without an order (list again).
FEED_SENT_MAX = 10_000

_SHUTTING_DOWN = "the server is shutting down: reconnect with resume_after = the last position"


@dataclass(frozen=True, slots=True)
class Watching:
    """What the Watch RPCs need: the hub, the projection and the event log's gaps."""

    hub: WatchHub
    source: ProjectionSource
    gaps: Gaps


def message(kind: int, position: Position, doc: bytes | None = None) -> bytes:
    return watch_update(kind, encode_token(position), doc)


def _kind(commits: int) -> int | None:
    """What the current state is to a client ``commits`` commits behind it."""
    return None if commits == 0 else CHANGE if commits == 1 else RESYNC


async def document_stream(
    w: Watching,
    entity: Entity,
    ident: str,
    sub: Subscription,
    freshness: Freshness,
    resume: Position | None,
) -> AsyncIterator[bytes]:
    """One document's stream over ``sub`` (opened before the first read, so no change
    between that read and the hub's first update is missed)."""
    start = later(resume, freshness.position)
    doc, last = await w.source.current(entity, ident, Freshness(start, freshness.max_wait_s))
    if resume is None:
        if doc is None:
            raise NotFound(f"{entity.label} {ident} not found")
        yield message(SNAPSHOT, last, doc)
    else:
        kind = _kind(await w.gaps.commits(entity, ident, doc, resume, last))
        if kind is not None:
            yield message(DELETED if doc is None else kind, last, doc)
        if doc is None:
            if kind is None:
                raise NotFound(f"{entity.label} {ident} not found")
            return
    while True:
        item = await sub.next()
        if isinstance(item, Ending):
            raise Unavailable(_SHUTTING_DOWN)
        if isinstance(item, Doubt):
            continue  # (feeds only: the hub reads watched documents again itself)
        if isinstance(item, FellBehind):
            WATCH_FELL_BEHIND.inc()
            yield message(qs.WATCH_KIND_FELL_BEHIND, last)
            now, at = await w.source.current(entity, ident, Freshness(last, freshness.max_wait_s))
            if now is None:
                yield message(DELETED, at, doc)
                return
            if now != doc:
                yield message(RESYNC, at, now)
            doc, last = now, at
            continue
        if item.position <= last:
            continue
        last = item.position
        if item.doc == doc:
            continue  # the state the client has (e.g. read again after a doubt)
        if item.doc is None:
            yield message(DELETED, last, doc)  # the last state it had
            return
        doc = item.doc
        yield message(item.kind, last, doc)


async def orders_feed(
    w: Watching,
    customer: str | None,
    sub: Subscription,
    freshness: Freshness,
    resume: Position | None,
) -> AsyncIterator[bytes]:
    """Every order (of ``customer``) as the projector changes it; first, with
    ``resume_after``, those changed since (or a RESYNC without an order: list again)."""
    start = later(resume, freshness.position)
    feed = _Feed(w, customer)
    feed.synced = await w.source.checkpoint_at_least(ORDERS, Freshness(start, freshness.max_wait_s))
    if resume is not None:
        async for out in feed.gap(resume):
            yield out
    while True:
        item = await sub.next()
        if isinstance(item, Ending):
            raise Unavailable(_SHUTTING_DOWN)
        if isinstance(item, FellBehind | Doubt):
            if isinstance(item, FellBehind):
                WATCH_FELL_BEHIND.inc()
                yield message(qs.WATCH_KIND_FELL_BEHIND, feed.synced)
            async for out in feed.gap(feed.synced):
                yield out
            continue
        # At or below where the feed last synced, or what it sent: already sent.
        if item.doc is not None and feed.fresh(item.ident, item.position, item.doc):
            # The position to resume from: never past a change not yet sent (the hub's
            # ``through``; unknown: where the feed last synced, everything before it sent).
            through = feed.synced if item.through is None else item.through
            yield message(item.kind, min(item.position, through), item.doc)


class _Feed:
    """Where an orders feed stands: the position it last synced at (its start, or a
    resync: every change up to it was sent), the orders sent since, at their positions
    (so a resync from the event log sends only what the client has not had), and a digest
    of each state the last resync sent."""

    def __init__(self, w: Watching, customer: str | None) -> None:
        self.synced = Position(0, 0)
        self._w = w
        self._customer = customer
        self._sent: dict[str, Position] = {}
        self._resynced: dict[str, bytes] = {}

    def fresh(self, ident: str, position: Position, doc: bytes) -> bool:
        """Whether an update is news to the client (and, if so, it is now sent)."""
        if position <= max(self.synced, self._sent.get(ident, self.synced)):
            return False
        # A state the last resync sent may come again from the hub at a later position:
        # the hub read it once its shard had moved on (a spread projection's shards move
        # apart), after a change heard before the resync.
        resynced = self._resynced.get(ident)
        if resynced is not None and resynced == _digest(doc):
            return False
        self._resynced.pop(ident, None)
        self._sent[ident] = position
        return True

    async def gap(self, after: Position) -> AsyncIterator[bytes]:
        """What changed after ``after`` and was not sent, as of now; then synced now."""
        self._resynced = {}
        upto = await self._w.source.checkpoint_at_least(ORDERS, Freshness(after, 0))
        overflow = len(self._sent) > FEED_SENT_MAX
        changed = (
            None if overflow else await self._w.gaps.changed_orders(self._customer, after, upto)
        )
        if changed is None:
            yield message(RESYNC, upto)  # no order: too much changed, list again
        else:
            # Each order's message says ``after`` (resuming there sends the rest of the gap
            # again), the last one ``upto``: everything up to it is sent then.
            held: tuple[int, bytes] | None = None
            for ident, (commits, newest) in sorted(changed.items()):
                if newest <= self._sent.get(ident, after):
                    continue  # sent already
                doc, at = await self._w.source.current(ORDERS, ident, Freshness(upto, 0))
                if doc is not None:
                    repeat = ident in self._sent  # some of its states were sent: not "next"
                    kind = CHANGE if commits == 1 and not repeat else RESYNC
                    self._sent[ident] = at
                    self._resynced[ident] = _digest(doc)
                    if held is not None:
                        yield message(held[0], after, held[1])
                    held = kind, doc
            if held is not None:
                yield message(held[0], upto, held[1])
        self.synced = max(self.synced, upto)
        # Updates the hub offers from now on are compared with ``synced``, except those
        # of orders sent above at a later position.
        self._sent = {i: p for i, p in self._sent.items() if p > self.synced}


def _digest(doc: bytes) -> bytes:
    """What a feed keeps of a state it sent: 16 bytes, not the document."""
    return hashlib.blake2b(doc, digest_size=16).digest()
