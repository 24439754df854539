"""Re-projecting one document from its aggregate's whole history (an unpark,
:mod:`projector.parking`): the document as the log makes it at a checkpoint, through
today's reducers, whatever the store holds now."""

from __future__ import annotations

from google.protobuf.message import Message

from common.entities import Entity
from common.entities._model import field_text
from common.event_log import Executor, events_until
from common.positions import Position
from projector.batch import reduce_batch
from projector.stores.memory_store import MemoryProjectionStore


async def reproject(kind: Entity, doc_id: str, at: Position, db: Executor) -> Message | None:
    """``kind``'s document ``doc_id`` as every event up to ``at`` makes it (``None``: it
    does not exist there). An order shows its customer: the customers it names on the
    way are read too and applied in the log's order, as a batch would.

    Raises :class:`~common.reducers.ReducerError` for an event the reducers refuse.
    """
    own = await events_until(db, [doc_id], at)
    shown: set[str] = set()
    doc: Message | None = None
    for event in own:
        doc = kind.reduce(doc, event)
        if doc is not None:
            shown |= {field_text(doc, e.by) for e in kind.embeds}
    shown.discard("")
    events = own
    if shown:
        others = await events_until(db, shown, at)
        events = sorted(own + others, key=lambda e: e.position)
    changes = await reduce_batch(
        kind, MemoryProjectionStore(kind), events, mine=lambda d: d == doc_id
    )
    return next((c.after for c in changes if c.id == doc_id), None)
