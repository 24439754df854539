"""One reader of the log per process: each stretch read and decoded once, for every
consumer that asks for it.

Every consumer follows the log from its own checkpoint and commits it with its own
writes (exactly-once is per consumer, as before). What the runners of a process share is
the reading: a :class:`LogFeed` reads the union of the process's consumers' filters, keeps
the last reads by their start position, and gives each runner the events of a read that
its consumer consumes (:meth:`~projector.outbox.LogRead.batch`). Runners following the log
wake together on a NOTIFY at the same position (the horizon) and share one statement and
one decoding; one that is behind reads its own stretches through the same cache.

A catch-up (a rebuild, a first start) does not read through the feed: consumers catching
up drift apart, and a union read narrowed to one of them gives it smaller batches, hence
more commits, while reading is a small part of a catch-up (see
:func:`projector.rebuild.catch_up`).

A kept read is reused as it was only when that gives the asker what it would have read
itself:

- a *full* read is final: the stretch ``start..next`` never changes (everything below the
  horizon it was read under has committed);
- a read that was not full ended at the horizon of its moment. It serves a runner woken
  by a NOTIFY only if it began after the last NOTIFY the runner had seen when it took its
  wakeup ticket (``seen``): what was committed before that has been read, and anything
  newer fires the ticket, exactly as after a read of its own. A runner that looks for
  another reason (it just started, its poll interval ran out: polling is the truth when a
  NOTIFY is lost) passes no ``seen`` and reads again.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from common.event_log import Executor
from common.events import StoredEvent
from common.positions import Position
from projector.consumer import Consumer
from projector.outbox import Batch, LogRead, read_batch, read_log
from projector.segments import Split, SplitConsumer


@dataclass(frozen=True, slots=True)
class Filter:
    """The events a consumer reads: of the aggregate types ``consumes``, and only of
    ``event_types`` if given; of a segment (``split``), only its aggregates' (a narrowing
    the log's statement does not make: applied to what was read)."""

    consumes: frozenset[str]
    event_types: frozenset[str] | None
    split: Split | None = None

    @classmethod
    def of(cls, consumer: Consumer) -> Filter:
        types = consumer.event_types
        split = consumer.split if isinstance(consumer, SplitConsumer) else None
        return cls(frozenset(consumer.consumes), None if types is None else frozenset(types), split)

    def keeps(self, event: StoredEvent) -> bool:
        return (
            event.aggregate_type in self.consumes
            and (self.event_types is None or event.event_type in self.event_types)
            and (self.split is None or self.split.keeps(event))
        )

    def within(self, other: Filter) -> bool:
        """Whether every event this filter keeps, ``other`` keeps too."""
        if not self.consumes <= other.consumes:
            return False
        if other.event_types is None:
            return True
        return self.event_types is not None and self.event_types <= other.event_types

    @classmethod
    def union(cls, filters: Iterable[Filter]) -> Filter:
        """The narrowest filter (of the shape the log's statement takes) keeping what any of
        ``filters`` keeps."""
        found = list(filters)
        consumes = frozenset().union(*(f.consumes for f in found))
        if any(f.event_types is None for f in found):
            return cls(consumes, None)
        return cls(consumes, frozenset().union(*(f.event_types or () for f in found)))


@dataclass(slots=True)
class _Kept:
    read: asyncio.Future[LogRead]
    generation: int  # the wakeup generation when the read started


class LogFeed:
    """Batches for the consumers of one process, each stretch of the log read once.

    ``consumers``: whose filters the reads cover (another consumer asking reads alone);
    ``keep``: how many reads are kept (the most recently used), which bounds how far apart
    two consumers may be and still share, and the memory held (``keep`` times the batch size,
    decoded events); ``generation``: the wakeup count of the process (see the module
    docstring), a counter that grows on every NOTIFY.
    """

    def __init__(
        self,
        db: Executor,
        consumers: Iterable[Consumer],
        *,
        keep: int = 32,
        generation: Generations | None = None,
    ) -> None:
        self._db = db
        # Each consumer's filter, made once (a runtime protocol check is not cheap), kept
        # with the consumer so that a reused id is not mistaken for it.
        self._filters: dict[int, tuple[Consumer, Filter]] = {
            id(c): (c, Filter.of(c)) for c in consumers
        }
        self._filter = Filter.union(f for _, f in self._filters.values())
        self._keep = keep
        self._generation: Generations = generation or _Never()
        self._kept: OrderedDict[tuple[Position, int], _Kept] = OrderedDict()
        self._tasks: set[asyncio.Task[LogRead]] = set()
        self.statements = 0  # reads run (observability and tests)

    async def batch(
        self,
        consumer: Consumer,
        after: Position,
        limit: int,
        *,
        seen: int | None = None,
    ) -> Batch:
        """The next batch of ``consumer`` after ``after`` (as :func:`read_batch` would read
        it). ``seen``: the wakeup generation the asker saw before it decided to read (a
        runner woken by a NOTIFY); ``None``: the asker wants what is committed now (a runner
        that polls or starts)."""
        wanted = self._filter_of(consumer)
        if not wanted.within(self._filter):
            self.statements += 1
            return await read_batch(self._db, after, consumer.consumes, limit, consumer.event_types)
        read = await self._read(after, limit, seen)
        return read.batch(wanted.keeps)

    def _filter_of(self, consumer: Consumer) -> Filter:
        known = self._filters.get(id(consumer))
        if known is not None and known[0] is consumer:
            return known[1]
        found = Filter.of(consumer)
        self._filters[id(consumer)] = (consumer, found)
        return found

    async def _read(self, after: Position, limit: int, seen: int | None) -> LogRead:
        key = (after, limit)
        kept = self._kept.get(key)
        if kept is not None:
            self._kept.move_to_end(key)
            with contextlib.suppress(Exception):  # a failed read is read again below
                read = await asyncio.shield(kept.read)
                if read.full or (seen is not None and kept.generation >= seen):
                    return read
        kept = self._start(key)
        return await asyncio.shield(kept.read)

    def _start(self, key: tuple[Position, int]) -> _Kept:
        after, limit = key
        f = self._filter
        event_types = None if f.event_types is None else sorted(f.event_types)
        self.statements += 1
        task = asyncio.ensure_future(
            read_log(self._db, after, sorted(f.consumes), limit, event_types)
        )
        self._tasks.add(task)
        kept = _Kept(task, self._generation.generation)
        task.add_done_callback(lambda t: self._done(key, kept, t))
        self._kept[key] = kept
        self._kept.move_to_end(key)
        while len(self._kept) > self._keep:
            self._kept.popitem(last=False)
        return kept

    def _done(self, key: tuple[Position, int], kept: _Kept, task: asyncio.Task[LogRead]) -> None:
        self._tasks.discard(task)
        failed = task.cancelled() or task.exception() is not None
        if failed and self._kept.get(key) is kept:
            del self._kept[key]  # the next asker reads again

    async def aclose(self) -> None:
        """Cancel the reads still running (no one waits for them any more)."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._kept.clear()


class Generations(Protocol):
    """Counts the wakeups of a process (:class:`projector.wakeup.Wakeup`)."""

    @property
    def generation(self) -> int: ...


class _Never:
    generation = 0
