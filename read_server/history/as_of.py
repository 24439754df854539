"""Time travel: a product, customer or order as it was at an instant, rebuilt by
replaying its events through the projector's reducers (``common.reducers``).

"As it was at T" is the aggregate after its events, in version order, up to the first
one that occurred after T (``common.event_log.events_as_of``).

Orders: the live views (write model, projections) show the customer's *current* name
and email on every order. As of T, an order shows them as they were at T: the name and
email its ``OrderPlaced`` copied, then every ``CustomerUpdated`` of its customer that
came after the placement in the log and occurred by T, applied with the projector's own
fan-out (``apply_customer_contact``). So ``GetOrderAsOf`` with T = now equals
``GetOrder``, and an earlier T shows the order exactly as a reader saw it then.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from google.protobuf.message import Message

from common import events as ev
from common.event_log import Executor, events_as_of
from common.events import StoredEvent
from common.pb.shop.v1 import shop_pb2
from common.reducers import apply_customer_contact, customer_contact, reduce_document


@dataclass(frozen=True, slots=True)
class Replayed:
    """The document as of the instant (``None``: not created yet, or deleted), and when
    it was deleted if its last event up to then was its deletion."""

    document: Message | None
    deleted_at: datetime | None


def replay(events: list[StoredEvent]) -> Replayed:
    """Fold one aggregate's events (version order) with the shared reducers."""
    doc: Message | None = None
    deleted_at: datetime | None = None
    for event in events:
        doc = reduce_document(doc, event)
        deleted_at = event.occurred_at if doc is None else None
    return Replayed(doc, deleted_at)


async def as_of(db: Executor, aggregate_type: str, ident: str, at: datetime) -> Replayed:
    """The aggregate ``ident`` of ``aggregate_type`` as it was at ``at``. For one
    consistent answer, ``db`` should be a connection in a REPEATABLE READ transaction
    (an order reads its own events and its customer's)."""
    events = await events_as_of(db, aggregate_type, ident, at)
    replayed = replay(events)
    order = replayed.document
    if not isinstance(order, shop_pb2.Order):
        return replayed
    placed = events[0].position  # OrderPlaced: version 1
    for event in await events_as_of(db, ev.CUSTOMER, order.customer_id, at):
        if event.position > placed and customer_contact(event):
            order = apply_customer_contact(order, event)
    return Replayed(order, None)
