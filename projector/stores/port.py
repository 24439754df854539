"""The port every projection store implements, and what crosses it.

A store holds one projection's documents, whatever indexes it keeps over them,
and its checkpoint. Documents and checkpoint only ever change together, through
:meth:`ProjectionStore.commit`, which is a compare-and-set on the checkpoint: the
position of the stored documents is always exactly the stored checkpoint, so an
event is applied once, even when a crashed, stale or second runner retries.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Protocol

from google.protobuf.message import Message

from common.positions import Position


class CheckpointMoved(Exception):
    """The stored checkpoint is not the expected one (or the store's generation was
    replaced by a rebuild): the commit changed nothing; reload the checkpoint."""

    def __init__(self, expected: Position, found: Position | None, detail: str = "") -> None:
        super().__init__(f"checkpoint moved: expected {expected}, found {found} {detail}".strip())
        self.expected = expected
        self.found = found


@dataclass(frozen=True, slots=True)
class Change:
    """One document's transition within a batch (``None`` = absent / removed).

    ``before`` is the document as loaded at the batch's expected checkpoint, so a
    store can derive index removals from it without reading again.
    """

    id: str
    before: Message | None
    after: Message | None


class ProjectionStore(Protocol):
    """Documents + checkpoint of one projection, changed atomically per batch."""

    @property
    def name(self) -> str:
        """The projection name, e.g. ``redis:orders`` (metrics, logs, failures)."""
        ...

    async def initialize(self) -> None:
        """Create the empty projection at the origin if it does not exist yet
        (idempotent, safe to race with another runner or a rebuild)."""
        ...

    async def checkpoint(self) -> Position:
        """The stored checkpoint (re-resolving the active generation, if any)."""
        ...

    async def load(self, ids: Collection[str]) -> dict[str, Message]:
        """The current documents among ``ids`` (absent ids are left out), in one round trip."""
        ...

    async def order_ids_by_customer(self, customer_ids: Collection[str]) -> dict[str, list[str]]:
        """Orders projection only: the ids of each customer's orders (every key present)."""
        ...

    async def commit(self, expected: Position, new: Position, changes: Sequence[Change]) -> None:
        """Atomically write ``changes`` and set the checkpoint to ``new``, provided the
        stored checkpoint is ``expected``; otherwise change nothing and raise
        :class:`CheckpointMoved`."""
        ...

    async def all_documents(self) -> dict[str, Message]:
        """Every document (verification and tests; reads the whole projection)."""
        ...
