"""A projection as a consumer of the event log: a kind's reducers over a store.

Reducing a batch reads the documents it touches from the store; if one is missing
or at the wrong version, that is a poison event only while the store is intact.
A store emptied under the runner (Redis restarted) fails the same way, so before
calling an event poison the projection checks the store's checkpoint again: a
missing one is ``StoreLost`` (rebuild), a different one ``CheckpointMoved`` (reload).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from google.protobuf.message import Message

from common.entities import Entity
from common.event_log import Executor
from common.positions import Position
from common.reducers import ReducerError
from projector.batch import reduce_batch
from projector.compare import diff_documents
from projector.consumer import Audit, CatchUp, Consumer, Reference
from projector.errors import CheckpointMoved, PoisonEvent, StoreLost
from projector.outbox import Batch
from projector.replay import reproject
from projector.segments import Split, all_segments
from projector.stores.port import Change, ProjectionStore, SplittableStore


class Projection:
    """The consumer that keeps ``store`` equal to the event log folded by ``kind`` (one
    segment of it if the store commits as a segment, :mod:`projector.segments`)."""

    def __init__(self, kind: Entity, store: ProjectionStore) -> None:
        self.kind = kind
        self.store = store
        segment = store.segment if isinstance(store, SplittableStore) else None
        # What it reads when it is one segment (projector.feed narrows reads with it).
        self.split = None if segment is None else Split(kind.aggregate_type, segment)

    def segments(self) -> list[Projection]:
        """One projection per segment of a split store (none: the store is not split, or
        this is a segment already)."""
        store = self.store
        if not isinstance(store, SplittableStore) or store.segments == 1 or self.split is not None:
            return []
        return [Projection(self.kind, store.split(s)) for s in all_segments(store.segments)]

    @property
    def name(self) -> str:
        return self.store.name

    @property
    def builds_alone(self) -> bool:
        store = self.store
        return isinstance(store, SplittableStore) and store.builds_alone

    @property
    def consumes(self) -> tuple[str, ...]:
        return self.kind.consumes

    rebuildable = True

    async def aclose(self) -> None:
        """The store's clients are the App's: nothing of its own."""

    @property
    def event_types(self) -> None:
        # Every event of the aggregates it consumes: one its entity neither folds nor
        # declares ignored must reach it and stop it as poison, not be skipped unseen.
        return None

    async def checkpoint(self) -> Position:
        return await self.store.checkpoint()

    async def apply(self, batch: Batch) -> None:
        events, mine = batch.events, None
        if self.split is not None:
            # Its own aggregates' events, and every event of an embedded aggregate (each
            # segment rewrites the documents it owns that show it). The feed gives it only
            # these; a read of its own (a careful retry) gives it all.
            mine = self.split.segment.owns
            events = [e for e in events if self.split.keeps(e)]
        try:
            changes = await reduce_batch(self.kind, self.store, events, mine)
        except ReducerError as exc:
            found = await self.store.checkpoint()  # StoreLost if the store is gone
            if found != batch.start:
                raise CheckpointMoved(batch.start, found, "(while reducing)") from exc
            raise PoisonEvent(exc.event, str(exc)) from exc
        await self.store.commit(batch.start, batch.next, changes)

    async def replay(
        self, aggregate_type: str, aggregate_id: str, at: Position, db: Executor
    ) -> int:
        """Re-project, from the log up to ``at`` (its checkpoint), the documents of its own
        that the aggregate makes: the aggregate's own document, or those showing it (an
        order shows its customer); write them with ``at`` as both the expected and the new
        checkpoint (``CheckpointMoved`` if it moved). How many changed. An event the
        reducers refuse raises :class:`PoisonEvent` (nothing written)."""
        kind, split = self.kind, self.split
        if aggregate_type == kind.aggregate_type:
            ids = [aggregate_id]
        else:
            embed = next((e for e in kind.embeds if e.aggregate_type == aggregate_type), None)
            if embed is None:
                return 0
            shown = await self.store.ids_by(embed.by, [aggregate_id])
            ids = sorted(shown.get(aggregate_id, ()))
        ids = [i for i in ids if split is None or split.segment.owns(i)]
        before = await self.store.load(ids)
        changes = []
        for doc_id in ids:
            try:
                after = await reproject(kind, doc_id, at, db)
            except ReducerError as exc:
                raise PoisonEvent(exc.event, str(exc)) from exc
            if after != before.get(doc_id):
                changes.append(Change(doc_id, before.get(doc_id), after))
        if changes:
            await self.store.commit(at, at, changes)
        return len(changes)

    async def new_copy(self) -> Projection:
        # Built whole (not split): switching it in splits it (ProjectionStore.switch_to).
        return Projection(self.kind, await self.store.new_copy())

    async def switch_to(self, copy: Consumer, catch_up: CatchUp) -> Position:
        if not isinstance(copy, Projection):
            raise TypeError(f"cannot switch {self.name} to {copy.name}")

        async def catch_up_store(store: ProjectionStore, db: Executor | None) -> Position:
            return await catch_up(Projection(self.kind, store), db)

        return await self.store.switch_to(copy.store, catch_up_store)

    async def discard(self) -> None:
        await self.store.discard()

    async def describe(self) -> str:
        return await self.store.describe()

    async def audit(self, reference: Reference) -> Audit:
        # The store first, from its checkpoint on; the write model's snapshot after it, so
        # whatever the store applied meanwhile is in the snapshot, and in flight.
        try:
            start: Position | None = await self.store.checkpoint()
        except StoreLost:
            start = None  # not built: every document is missing, none in flight
        actual = await self.store.all_documents()
        integrity = await self.store.integrity_state()
        expected = await reference.documents(self.kind.name, start)
        skip = expected.in_flight
        lines = compare_documents(expected.documents, actual, skip)
        return Audit(len(actual), lines + integrity.problems(expected.documents, skip), len(skip))


def segments_of(consumer: Consumer) -> list[Consumer]:
    """The segments of a split projection (none: not split, or not a projection)."""
    return list(consumer.segments()) if isinstance(consumer, Projection) else []


def compare_documents(
    expected: Mapping[str, Message],
    actual: Mapping[str, Message],
    skip: Collection[str] = (),
) -> list[str]:
    """Missing, extra and differing documents, one line each (none for ids in ``skip``)."""
    lines: list[str] = []
    for doc_id in sorted((expected.keys() | actual.keys()) - set(skip)):
        want, got = expected.get(doc_id), actual.get(doc_id)
        if got is None:
            lines.append(f"{doc_id}: missing (exists in the write model)")
        elif want is None:
            lines.append(f"{doc_id}: extra (not in the write model)")
        else:
            lines += [
                f"{doc_id}: {d.path}: projection={d.actual} write model={d.expected}"
                for d in diff_documents(got, want)
            ]
    return lines
