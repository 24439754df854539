"""The port every projection store implements, and what crosses it.

A store holds one projection's documents, whatever indexes it keeps over them,
and its checkpoint. Documents and checkpoint only ever change together, through
:meth:`ProjectionStore.commit`, which is a compare-and-set on the checkpoint: the
position of the stored documents is always exactly the stored checkpoint, so an
event is applied once, even when a crashed, stale or second runner retries.

A store that has no state (never built, or lost it) says so with
:class:`~projector.errors.StoreLost` from :meth:`checkpoint` and :meth:`commit`;
a new live state only ever comes from a copy (:meth:`new_copy`) filled from the
event log and switched in (:meth:`switch_to`), so readers never see a half-built one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from google.protobuf.message import Message

from common.positions import Position
from projector.segments import Segment

if TYPE_CHECKING:
    from common.event_log import Executor


@dataclass(frozen=True, slots=True)
class Change:
    """One document's transition within a batch (``None`` = absent / removed).

    ``before`` is the document as loaded at the batch's expected checkpoint, so a
    store can derive index removals from it without reading again.
    """

    id: str
    before: Message | None
    after: Message | None


# Fills a store copy up to the current horizon, reading the log through the executor
# given (``None``: the pool); returns its checkpoint. Passed in by the caller: the
# stores cannot import the reducers that do it.
StoreCatchUp = Callable[["ProjectionStore", "Executor | None"], Awaitable[Position]]


class ProjectionStore(Protocol):
    """Documents + checkpoint of one projection, changed atomically per batch."""

    @property
    def name(self) -> str:
        """The projection name, e.g. ``redis:orders`` (a copy's name says it is one)."""
        ...

    async def checkpoint(self) -> Position:
        """The stored checkpoint (re-resolving the active generation, if any);
        ``StoreLost`` if the projection has none."""
        ...

    async def load(self, ids: Collection[str]) -> dict[str, Message]:
        """The current documents among ``ids`` (absent ids are left out), in one round trip."""
        ...

    async def ids_by(self, field: str, values: Collection[str]) -> dict[str, list[str]]:
        """The ids of the documents whose ``field`` is each of ``values`` (every value a
        key); ``field`` is one of the entity's list filters (an embed's ``by``)."""
        ...

    async def commit(self, expected: Position, new: Position, changes: Sequence[Change]) -> None:
        """Atomically write ``changes`` and set the checkpoint to ``new``, provided the
        stored checkpoint is ``expected``; otherwise change nothing and raise
        ``CheckpointMoved`` (``StoreLost`` if there is no checkpoint at all)."""
        ...

    async def all_documents(self) -> dict[str, Message]:
        """Every document (verification and tests; reads the whole projection)."""
        ...

    async def new_copy(self) -> ProjectionStore:
        """An empty copy at the origin, invisible to readers until switched in."""
        ...

    async def switch_to(self, copy: ProjectionStore, catch_up: StoreCatchUp) -> Position:
        """Catch ``copy`` up and make it the live projection atomically, never going
        behind the live checkpoint; returns the checkpoint it went live at."""
        ...

    async def discard(self) -> None:
        """Remove this copy and everything in it."""
        ...

    async def describe(self) -> str:
        """A short state for ``cqrs projector status``."""
        ...

    async def integrity_state(self) -> Integrity:
        """What the store-specific checks need (e.g. the Redis index memberships), read
        now; verify reads it with the documents, before the write model's snapshot."""
        ...


@runtime_checkable
class SplittableStore(ProjectionStore, Protocol):
    """A store whose live projection may be split into segments (:mod:`projector.segments`):
    each segment commits its own checkpoint, and the projection's is the lowest of them."""

    segments: int  # how many the live projection is split into (1: not split)
    segment: Segment | None  # the one this store commits as (None: the whole)

    def split(self, segment: Segment) -> SplittableStore:
        """The live projection as ``segment`` commits it."""
        ...

    @property
    def builds_alone(self) -> bool:
        """Whether this segment is rebuilt alone, into a copy of its own (a shard of a
        spread Redis projection), rather than with the whole, split when switched in."""
        ...


class Integrity(Protocol):
    """A store's own structures as read for verify."""

    def problems(self, expected: Mapping[str, Message], skip: Collection[str]) -> list[str]:
        """Where they differ from what the expected documents imply, leaving out the
        documents in ``skip`` (in flight). One line per problem."""
        ...


class NoIntegrity:
    """A store with nothing to check beside its documents."""

    def problems(self, expected: Mapping[str, Message], skip: Collection[str]) -> list[str]:
        return []
