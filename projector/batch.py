"""Turning a batch of events into document changes for one projection.

The documents a batch touches are loaded in one round trip (plus one for the
orders fan-out lookup), then every event is reduced in order against an
in-batch cache, so several events on one document cost one read and one write.
"""

from __future__ import annotations

from collections.abc import Sequence

from google.protobuf.message import Message

from common.events import StoredEvent
from common.pb.shop.v1 import shop_pb2
from common.reducers import apply_customer_contact, customer_contact, reduce_document
from projector.projections import ProjectionKind
from projector.stores.port import Change, ProjectionStore


async def reduce_batch(
    kind: ProjectionKind, store: ProjectionStore, events: Sequence[StoredEvent]
) -> list[Change]:
    """The changes ``events`` make to ``store``'s current documents (nothing is written).

    Raises :class:`~projector.errors.ReducerError` for a poison event.
    """
    own = [e for e in events if e.aggregate_type == kind.aggregate_type]
    fan_out = [e for e in events if e.aggregate_type != kind.aggregate_type and customer_contact(e)]
    ids = {e.aggregate_id for e in own}
    # customer id -> ids of that customer's orders, as stored, then kept current in-batch.
    orders_of: dict[str, set[str]] = {}
    if fan_out:
        stored = await store.order_ids_by_customer({e.aggregate_id for e in fan_out})
        orders_of = {cid: set(oids) for cid, oids in stored.items()}
        for oids in orders_of.values():
            ids |= oids
    before = await store.load(ids) if ids else {}
    docs: dict[str, Message | None] = dict(before)
    for event in events:
        if event.aggregate_type == kind.aggregate_type:
            old = docs.get(event.aggregate_id)
            new = reduce_document(old, event)
            docs[event.aggregate_id] = new
            if isinstance(new, shop_pb2.Order) and old is None:
                orders_of.get(new.customer_id, set()).add(new.id)
            elif isinstance(old, shop_pb2.Order) and new is None:
                orders_of.get(old.customer_id, set()).discard(old.id)
        elif event.aggregate_id in orders_of:
            for order_id in sorted(orders_of[event.aggregate_id]):
                order = docs.get(order_id)
                if isinstance(order, shop_pb2.Order):
                    docs[order_id] = apply_customer_contact(order, event)
    return [
        Change(doc_id, before.get(doc_id), after)
        for doc_id, after in docs.items()
        if after is not before.get(doc_id)
    ]
