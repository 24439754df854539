"""Turning a batch of events into document changes for one projection.

The documents a batch touches are loaded in one round trip (plus one per embed for the
documents that show another aggregate, e.g. the orders of a renamed customer), then
every event is reduced in order against an in-batch cache, so several events on one
document cost one read and one write.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from google.protobuf.message import Message

from common.entities import Embed, Entity
from common.entities._model import field_text
from common.events import StoredEvent
from common.reducers import ReducerError
from projector.stores.port import Change, ProjectionStore


async def reduce_batch(
    kind: Entity,
    store: ProjectionStore,
    events: Sequence[StoredEvent],
    mine: Callable[[str], bool] | None = None,
) -> list[Change]:
    """The changes ``events`` make to ``store``'s current documents (nothing is written).
    ``mine``: which documents are this segment's (:mod:`projector.segments`); an embedded
    aggregate's event changes only those (``None``: every document).

    Raises :class:`~common.reducers.ReducerError` for a poison event, an event type the
    entity does not know (neither folded nor declared ignored) included.
    """
    for event in events:
        if not kind.knows(event.event_type):
            raise ReducerError(event, f"{kind.name} does not know this event type")
    own = [e for e in events if e.aggregate_type == kind.aggregate_type]
    ids = {e.aggregate_id for e in own}
    # Per embed: the other aggregate's id -> ids of the documents showing it, as stored,
    # then kept current in-batch.
    shown: dict[str, dict[str, set[str]]] = {}
    for embed in kind.embeds:
        changing = {
            e.aggregate_id
            for e in events
            if e.aggregate_type == embed.aggregate_type and embed.changes(e)
        }
        if changing:
            stored = await store.ids_by(embed.by, changing)
            shown[embed.aggregate_type] = {
                k: {d for d in v if mine is None or mine(d)} for k, v in stored.items()
            }
            for doc_ids in shown[embed.aggregate_type].values():
                ids |= doc_ids
    before = await store.load(ids) if ids else {}
    docs: dict[str, Message | None] = dict(before)
    for event in events:
        if event.aggregate_type == kind.aggregate_type:
            old = docs.get(event.aggregate_id)
            new = kind.reduce(old, event)
            docs[event.aggregate_id] = new
            _track(kind.embeds, shown, old, new)
            continue
        embed = next(e for e in kind.embeds if e.aggregate_type == event.aggregate_type)
        for doc_id in sorted(shown.get(embed.aggregate_type, {}).get(event.aggregate_id, ())):
            doc = docs.get(doc_id)
            if doc is not None:
                docs[doc_id] = embed.apply(doc, event)
    return [
        Change(doc_id, before.get(doc_id), after)
        for doc_id, after in docs.items()
        if after is not before.get(doc_id)
    ]


def _track(
    embeds: Sequence[Embed],
    shown: dict[str, dict[str, set[str]]],
    old: Message | None,
    new: Message | None,
) -> None:
    """A document created or deleted in this batch joins or leaves the sets of the
    documents showing each embedded aggregate."""
    for embed in embeds:
        by_value = shown.get(embed.aggregate_type)
        if by_value is None:
            continue
        if old is None and new is not None:
            by_value.get(field_text(new, embed.by), set()).add(field_text(new, "id"))
        elif old is not None and new is None:
            by_value.get(field_text(old, embed.by), set()).discard(field_text(old, "id"))
