"""In-memory projection store: the fake for unit tests, with the real stores' contract
(``CheckpointMoved``, ``StoreLost``, copies, copy-on-read documents)."""

from __future__ import annotations

from collections.abc import Collection, Sequence

from google.protobuf.message import Message

from common.entities import Entity
from common.entities._model import field_text
from common.positions import ORIGIN, Position
from projector.errors import CheckpointMoved, StoreLost
from projector.stores.port import Change, NoIntegrity, ProjectionStore, StoreCatchUp


class MemoryProjectionStore:
    """A projection held in dicts of serialized documents (so callers cannot alias them).

    A new store has no state (like an empty Redis) until a copy is switched in;
    :meth:`lose` empties it again, as a Redis restart would.
    """

    def __init__(self, kind: Entity, name: str | None = None) -> None:
        self.kind = kind
        self._name = name or f"memory:{kind.name}"
        self._docs: dict[str, bytes] = {}
        self._checkpoint: Position | None = None
        self.commits = 0

    @property
    def name(self) -> str:
        return self._name

    def lose(self) -> None:
        """Forget everything (tests: what a Redis restart without persistence does)."""
        self._docs.clear()
        self._checkpoint = None

    async def checkpoint(self) -> Position:
        if self._checkpoint is None:
            raise StoreLost(self._name, "has no state")
        return self._checkpoint

    async def load(self, ids: Collection[str]) -> dict[str, Message]:
        return {i: self._parse(self._docs[i]) for i in ids if i in self._docs}

    async def ids_by(self, field: str, values: Collection[str]) -> dict[str, list[str]]:
        result: dict[str, list[str]] = {v: [] for v in values}
        for doc_id, raw in self._docs.items():
            value = field_text(self._parse(raw), field)
            if value in result:
                result[value].append(doc_id)
        return result

    async def commit(self, expected: Position, new: Position, changes: Sequence[Change]) -> None:
        if self._checkpoint is None:
            raise StoreLost(self._name, "has no state", expected)
        if self._checkpoint != expected:
            raise CheckpointMoved(expected, self._checkpoint)
        for change in changes:
            if change.after is None:
                self._docs.pop(change.id, None)
            else:
                self._docs[change.id] = change.after.SerializeToString()
        self._checkpoint = new
        self.commits += 1

    async def all_documents(self) -> dict[str, Message]:
        return {i: self._parse(raw) for i, raw in self._docs.items()}

    async def new_copy(self) -> MemoryProjectionStore:
        copy = MemoryProjectionStore(self.kind, f"{self._name}@copy")
        copy._checkpoint = ORIGIN
        return copy

    async def switch_to(self, copy: ProjectionStore, catch_up: StoreCatchUp) -> Position:
        if not isinstance(copy, MemoryProjectionStore) or copy._checkpoint is None:
            raise TypeError(f"cannot switch {self._name} to {copy.name}")
        position = await catch_up(copy, None)
        if self._checkpoint is not None and position < self._checkpoint:
            raise RuntimeError(f"{copy.name} at {position} is behind {self._name}")
        self._docs, self._checkpoint = dict(copy._docs), position
        return position

    async def discard(self) -> None:
        self.lose()

    async def describe(self) -> str:
        await self.checkpoint()
        return f"{len(self._docs)} documents"

    async def integrity_state(self) -> NoIntegrity:
        return NoIntegrity()

    def _parse(self, raw: bytes) -> Message:
        doc = self.kind.document()
        doc.ParseFromString(raw)
        return doc
