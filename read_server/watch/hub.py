"""The Watch streams of one read-server process, fed by the projector's change messages.

The hub follows the change feed (:class:`read_server.sources.change_feed.ChangeFeed`):
every committed batch names the documents it changed, and for each one some stream
watches, the hub reads the document once from Redis (with the checkpoint it is current
at) and offers it to every such stream. Nothing polls per stream: an idle stream costs a
buffer and a set entry. Reads of one document are serialized (one in flight; a change
heard meanwhile makes it read once more), so what a stream is offered only moves forward.

An orders feed follows many documents, read concurrently (and, for a projection spread
over shards, published by shards that move on independently), so the state of one order
may be offered before an earlier change of another. What a feed tells its client as the
position to resume from is therefore never past a change not yet offered: the lowest of
the update's own position, the lowest checkpoint heard of every part of the projection,
and, for each order whose change was heard but not yet offered, where its part stood
before that change (``Update.through``). Resuming there may send a state again; it never
skips one.

Backpressure: a stream's buffer holds at most ``buffer`` updates; one more and the
buffer is emptied and the stream marked as having fallen behind (the servicer tells the
client, then resynchronises from the event log), so a slow client never grows the
server's memory beyond its bound.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections import Counter, OrderedDict, deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from redis.exceptions import RedisError

from common.changes import ChangeMessage
from common.entities import BY_NAME, ORDERS, Entity
from common.errors import AppError, ResourceExhausted
from common.metrics import WATCH_STREAMS, WATCH_UPDATES
from common.pb.shop.v1 import query_service_pb2 as qs
from common.pb.shop.v1 import shop_pb2
from common.positions import Position
from common.settings import Settings
from read_server.sources.base import Freshness

log = logging.getLogger(__name__)

# How long a read after a change may wait for Redis to show that change (it always has:
# the message is published after the batch committed), and the pause before reading a
# document again after a failed read (Redis down, a rebuild under way).
_READ_WAIT_S = 1.0
_RETRY_S = 0.5
# Positions remembered to offer a state once (the oldest forgotten first).
_OFFERED_MAX = 65_536

CHANGE, RESYNC = qs.WATCH_KIND_CHANGE, qs.WATCH_KIND_RESYNC

# (projection, document id)
Key = tuple[str, str]


class DocumentReader(Protocol):
    """Where the hub reads documents (:class:`read_server.sources.projection.ProjectionSource`)."""

    async def current(
        self, entity: Entity, ident: str, freshness: Freshness
    ) -> tuple[bytes | None, Position]:
        """The document (``None``: none) and the checkpoint it is current at."""
        ...


@dataclass(frozen=True, slots=True)
class WatchLimits:
    """``streams``: open at once per process; ``per_subject``: per authenticated subject;
    ``buffer``: updates held per stream for a slow client."""

    streams: int = 20_000
    per_subject: int = 5_000
    buffer: int = 64

    @classmethod
    def from_settings(cls, settings: Settings) -> WatchLimits:
        return cls(
            settings.watch_streams_max,
            settings.watch_streams_per_subject,
            max(1, settings.watch_buffer),
        )


@dataclass(frozen=True, slots=True)
class Update:
    """Document ``ident``'s state at ``position`` (``doc`` None: deleted); ``kind`` CHANGE, or
    RESYNC when states may have gone unseen before it (the feed was in doubt). ``through``
    (orders feeds): every change at or below it was offered before or with this update
    (``None``: not known, a part of the projection not heard since the feed's doubt)."""

    ident: str
    kind: int
    position: Position
    doc: bytes | None
    through: Position | None = None


class Ending:
    """The stream must end (the server is shutting down)."""


class FellBehind:
    """Updates were dropped: the client read more slowly than they came."""


class Doubt:
    """Changes may have gone unheard (the change feed was lost): a feed resyncs."""


ENDING, FELL_BEHIND, DOUBT = Ending(), FellBehind(), Doubt()


class Subscription:
    """One stream's bounded buffer of updates.

    Kept small, since an idle stream is mostly this: slots, the buffer made on the first
    update, and a future only while the stream waits (an ``asyncio.Event`` and a deque
    each hold a 600-byte block: with them, 10,000 idle streams grew the read server by
    300 MB, without them by 281 MB, ``cqrs bench watch-idle``)."""

    __slots__ = (
        "__weakref__",
        "_buffer",
        "_doubt",
        "_fell_behind",
        "_hub",
        "_waiter",
        "customer",
        "key",
        "subject",
    )  # fmt: skip

    def __init__(self, hub: WatchHub, key: Key | None, customer: str | None, subject: str):
        self.key = key  # a document's stream; None: the orders feed
        self.customer = customer  # the feed's customer (None: every order)
        self.subject = subject
        self._hub = hub
        self._buffer: deque[Update] | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._fell_behind = False
        self._doubt = False

    def offer(self, update: Update) -> None:
        if self._fell_behind:
            return  # a resync from the event log follows: nothing before it matters
        if self._buffer is None:
            self._buffer = deque()
        if len(self._buffer) >= self._hub.limits.buffer:
            self._buffer.clear()
            self._fell_behind = True
        else:
            self._buffer.append(update)
        self.wake()

    def wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def doubt(self) -> None:
        self._doubt = True
        self.wake()

    async def next(self) -> Update | Ending | FellBehind | Doubt:
        """The next update, or why there is none."""
        while True:
            if self._hub.ending:
                return ENDING
            if self._fell_behind:
                self._fell_behind = self._doubt = False
                return FELL_BEHIND
            if self._doubt:
                self._doubt = False
                return DOUBT
            if self._buffer:
                return self._buffer.popleft()
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    def close(self) -> None:
        self._hub.close(self)


class WatchHub:
    """Every Watch stream of the process, and the reads that feed them."""

    def __init__(self, source: DocumentReader, limits: WatchLimits) -> None:
        self.limits = limits
        self.ending = False
        self._source = source
        self._docs: dict[Key, set[Subscription]] = {}
        self._feeds: dict[str | None, set[Subscription]] = {}
        self._subjects: Counter[str] = Counter()
        self._open = 0
        self._delivered: dict[Key, bytes | None] = {}  # the last state offered, per document
        self._offered: OrderedDict[Key, Position] = OrderedDict()  # its position (the newest)
        self._pending: dict[Key, tuple[Position | None, int]] = {}
        self._reading: dict[Key, asyncio.Task[None]] = {}
        # For the orders feeds: the lowest checkpoint heard of the orders projection's parts,
        # and, per order with a change heard but not yet offered, where its part stood before.
        # (None: not known, the first change heard of its part since a doubt.)
        self._heard_through: Position | None = None
        self._unoffered: dict[str, Position | None] = {}

    @property
    def open_streams(self) -> int:
        return self._open

    def open(self, key: Key, subject: str) -> Subscription:
        """A stream of one document's updates (RESOURCE_EXHAUSTED beyond the limits)."""
        sub = self._admit(Subscription(self, key, None, subject))
        self._docs.setdefault(key, set()).add(sub)
        return sub

    def open_feed(self, customer: str | None, subject: str) -> Subscription:
        """A stream of every order's updates (of ``customer``, or of all)."""
        sub = self._admit(Subscription(self, None, customer, subject))
        self._feeds.setdefault(customer, set()).add(sub)
        return sub

    def _admit(self, sub: Subscription) -> Subscription:
        if self.ending:
            raise ResourceExhausted("the server is shutting down; reconnect")
        if self._open >= self.limits.streams:
            raise ResourceExhausted(
                f"too many Watch streams on this server (at most {self.limits.streams}); "
                "retry later or on another server"
            )
        if sub.subject and self._subjects[sub.subject] >= self.limits.per_subject:
            raise ResourceExhausted(
                f"too many Watch streams for {sub.subject!r} (at most {self.limits.per_subject})"
            )
        self._open += 1
        self._subjects[sub.subject] += 1
        WATCH_STREAMS.inc()
        return sub

    def close(self, sub: Subscription) -> None:
        """Forget ``sub`` (idempotent)."""
        group = self._docs.get(sub.key) if sub.key is not None else self._feeds.get(sub.customer)
        if group is None or sub not in group:
            return
        group.discard(sub)
        if not group:
            if sub.key is not None:
                del self._docs[sub.key]
                self._delivered.pop(sub.key, None)
            else:
                del self._feeds[sub.customer]
                if not self._feeds:
                    self._unoffered.clear()
        self._open -= 1
        self._subjects[sub.subject] -= 1
        if not self._subjects[sub.subject]:
            del self._subjects[sub.subject]
        WATCH_STREAMS.dec()

    def shut_down(self) -> None:
        """Every stream ends (told to reconnect); no new one opens."""
        self.ending = True
        for group in (*self._docs.values(), *self._feeds.values()):
            for sub in group:
                sub.wake()
        for task in self._reading.values():
            task.cancel()

    # The change feed's follower (read_server.sources.change_feed.ChangeFollower).

    def changed(
        self,
        projection: str,
        change: ChangeMessage,
        since: Position | None = None,
        through: Position | None = None,
    ) -> None:
        if projection == ORDERS.name:
            self._heard_through = through
        if change.switch:
            # A rebuilt copy: the same states, unless the rebuild changed what they hold.
            self._read_all(projection, RESYNC)
            return
        feeds = projection == ORDERS.name and bool(self._feeds)
        for ident in change.ids:
            key = (projection, ident)
            if feeds or key in self._docs:
                if feeds:
                    # The earliest change not offered counts; an unknown one, until offered.
                    earlier = self._unoffered.get(ident, since)
                    self._unoffered[ident] = None if since is None else earlier
                self._read(key, change.checkpoint, CHANGE)

    def following(self, projection: str) -> None:
        # Changes may have gone unheard while in doubt: read every watched document again;
        # a feed closes its gap from the event log.
        self._read_all(projection, RESYNC)
        if projection == ORDERS.name:
            self._heard_through = None
            for group in self._feeds.values():
                for sub in group:
                    sub.doubt()

    def _read_all(self, projection: str, kind: int) -> None:
        for key in [k for k in self._docs if k[0] == projection]:
            self._read(key, None, kind)

    def _read(self, key: Key, at: Position | None, kind: int) -> None:
        """Read ``key`` (at ``at`` or later) and offer it; one read per key at a time."""
        earlier = self._pending.get(key)
        if earlier is not None:
            at = later(earlier[0], at)
            kind = max(kind, earlier[1])  # a RESYNC stays one
        self._pending[key] = (at, kind)
        if key not in self._reading:
            self._reading[key] = asyncio.create_task(self._reader(key), name=f"watch {key}")

    async def _reader(self, key: Key) -> None:
        try:
            while key in self._pending and self._watched(key):
                at, kind = self._pending.pop(key)
                entity = BY_NAME[key[0]]
                try:
                    doc, position = await self._source.current(
                        entity, key[1], Freshness(at, _READ_WAIT_S)
                    )
                except (AppError, RedisError, OSError) as exc:
                    log.warning("watch: reading %s %s failed (%s); retrying", *key, exc)
                    self._read(key, at, RESYNC)
                    await asyncio.sleep(_RETRY_S)
                    continue
                if key[0] == ORDERS.name and key not in self._pending:
                    self._unoffered.pop(key[1], None)  # offered now, no change heard since
                self._offer(key, Update(key[1], kind, position, doc))
        finally:
            del self._reading[key]
            if not self._watched(key):
                self._pending.pop(key, None)
                if key[0] == ORDERS.name:
                    self._unoffered.pop(key[1], None)

    def _watched(self, key: Key) -> bool:
        return key in self._docs or (key[0] == ORDERS.name and bool(self._feeds))

    def _offer(self, key: Key, update: Update) -> None:
        # A read after a message may find the state a read before it already offered
        # (no batch in between): the same position, offered once.
        if self._offered.get(key) == update.position:
            return
        self._offered[key] = update.position
        self._offered.move_to_end(key)
        if len(self._offered) > _OFFERED_MAX:
            self._offered.popitem(last=False)
        watchers = self._docs.get(key)
        if watchers:
            if key in self._delivered and self._delivered[key] == update.doc:
                return  # the same state again (e.g. a switch to a rebuilt copy)
            self._delivered[key] = update.doc
            WATCH_UPDATES.inc(len(watchers))
            for sub in watchers:
                sub.offer(update)
        if key[0] == ORDERS.name and update.doc is not None and self._feeds:
            fed = dataclasses.replace(update, through=self._feed_through(update.position))
            for sub in self._feed_subscribers(update.doc):
                sub.offer(fed)

    def _feed_through(self, position: Position) -> Position | None:
        """Where a feed's client may resume after an update at ``position``: no change at
        or below it is still to be offered (``None``: not known)."""
        if self._heard_through is None:
            return None
        waiting = self._unoffered.values()
        if None in waiting:
            return None
        return min(position, self._heard_through, *(p for p in waiting if p is not None))

    def _feed_subscribers(self, doc: bytes) -> Iterable[Subscription]:
        customer = shop_pb2.Order.FromString(doc).customer_id
        found = [*self._feeds.get(None, ()), *self._feeds.get(customer, ())]
        WATCH_UPDATES.inc(len(found))
        return found


def later(a: Position | None, b: Position | None) -> Position | None:
    """The later of two positions (``None``: none)."""
    if a is None:
        return b
    return a if b is None else max(a, b)
