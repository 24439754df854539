"""In-memory projection store: the fake for unit tests, with the real stores' contract
(including :class:`CheckpointMoved` and copy-on-read documents)."""

from __future__ import annotations

from collections.abc import Collection, Sequence

from google.protobuf.message import Message

from common.pb.shop.v1 import shop_pb2
from common.positions import ORIGIN, Position
from projector.projections import ProjectionKind
from projector.stores.port import Change, CheckpointMoved


class MemoryProjectionStore:
    """A projection held in dicts of serialized documents (so callers cannot alias them)."""

    def __init__(self, kind: ProjectionKind, name: str | None = None) -> None:
        self.kind = kind
        self._name = name or f"memory:{kind.name}"
        self._docs: dict[str, bytes] = {}
        self._checkpoint: Position | None = None
        self.commits = 0

    @property
    def name(self) -> str:
        return self._name

    async def initialize(self) -> None:
        if self._checkpoint is None:
            self._checkpoint = ORIGIN

    async def checkpoint(self) -> Position:
        return self._checkpoint if self._checkpoint is not None else ORIGIN

    async def load(self, ids: Collection[str]) -> dict[str, Message]:
        return {i: self._parse(self._docs[i]) for i in ids if i in self._docs}

    async def order_ids_by_customer(self, customer_ids: Collection[str]) -> dict[str, list[str]]:
        result: dict[str, list[str]] = {cid: [] for cid in customer_ids}
        for doc in map(self._parse, self._docs.values()):
            if isinstance(doc, shop_pb2.Order) and doc.customer_id in result:
                result[doc.customer_id].append(doc.id)
        return result

    async def commit(self, expected: Position, new: Position, changes: Sequence[Change]) -> None:
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

    def _parse(self, raw: bytes) -> Message:
        doc = self.kind.document()
        doc.ParseFromString(raw)
        return doc
