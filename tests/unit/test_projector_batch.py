"""reduce_batch over the in-memory store: in-batch cache and the orders fan-out."""

from __future__ import annotations

from typing import Any

import pytest

from common import events as ev
from common.entities import ORDERS, PRODUCTS
from common.entities import Entity as ProjectionKind
from common.events import StoredEvent
from common.pb.shop.v1 import shop_pb2
from common.positions import ORIGIN, Position
from common.reducers import ReducerError
from projector.batch import reduce_batch
from projector.stores.memory_store import MemoryProjectionStore
from tests.contract.projection_store import as_it_is
from tests.unit.test_projector_reducers import CID, CUSTOMER, OID, PID, PLACED, PRODUCT, T0

OID2 = "00000000-0000-0000-0000-0000000000aa"
_seq = iter(range(1, 10_000))


def e(
    aggregate_type: str, ident: str, version: int, kind: str, payload: dict[str, Any]
) -> StoredEvent:
    return StoredEvent(next(_seq), 500, aggregate_type, ident, version, kind, payload, T0)


def rename(version: int, **changes: str) -> StoredEvent:
    return e(ev.CUSTOMER, CID, version, ev.CUSTOMER_UPDATED, {"changes": changes})


async def apply(store: MemoryProjectionStore, events: list[StoredEvent]) -> None:
    kind = ORDERS if store.kind is ORDERS else PRODUCTS
    changes = await reduce_batch(kind, store, events)
    expected = await store.checkpoint()
    await store.commit(expected, Position(expected.xid + 1, 0), changes)


async def built(kind: ProjectionKind) -> MemoryProjectionStore:
    """An empty store, built (the way the runner builds every store: a copy switched in)."""
    store = MemoryProjectionStore(kind)
    await store.switch_to(await store.new_copy(), as_it_is)
    return store


async def orders_store() -> MemoryProjectionStore:
    store = await built(ORDERS)
    return store


async def test_several_events_on_one_document_make_one_change() -> None:
    store = await built(PRODUCTS)
    events = [
        e(ev.PRODUCT, PID, 1, ev.PRODUCT_CREATED, PRODUCT),
        e(ev.PRODUCT, PID, 2, ev.PRODUCT_UPDATED, {"changes": {"name": "B2"}}),
        e(
            ev.PRODUCT,
            PID,
            3,
            ev.PRODUCT_STOCK_RESERVED,
            {"order_id": OID, "quantity": 1, "stock": 4},
        ),
    ]
    changes = await reduce_batch(PRODUCTS, store, events)
    assert len(changes) == 1 and changes[0].before is None
    after = changes[0].after
    assert isinstance(after, shop_pb2.Product)
    assert (after.name, after.stock, after.version) == ("B2", 4, 3)


async def test_created_and_deleted_in_one_batch_is_no_change() -> None:
    store = await built(PRODUCTS)
    events = [
        e(ev.PRODUCT, PID, 1, ev.PRODUCT_CREATED, PRODUCT),
        e(ev.PRODUCT, PID, 2, ev.PRODUCT_DELETED, {}),
    ]
    assert await reduce_batch(PRODUCTS, store, events) == []


async def test_replayed_events_make_no_change() -> None:
    store = await built(PRODUCTS)
    created = e(ev.PRODUCT, PID, 1, ev.PRODUCT_CREATED, PRODUCT)
    await apply(store, [created])
    assert await reduce_batch(PRODUCTS, store, [created]) == []


async def test_customer_rename_rewrites_stored_orders() -> None:
    store = await orders_store()
    await apply(store, [e(ev.ORDER, OID, 1, ev.ORDER_PLACED, PLACED)])
    await apply(store, [rename(2, name="Ada L.", email="ada@l.org")])
    doc = (await store.load([OID]))[OID]
    assert isinstance(doc, shop_pb2.Order)
    assert (doc.customer_name, doc.customer_email, doc.version) == ("Ada L.", "ada@l.org", 1)


async def test_rename_after_placement_in_the_same_batch_reaches_the_new_order() -> None:
    store = await orders_store()
    await apply(store, [e(ev.ORDER, OID, 1, ev.ORDER_PLACED, PLACED)])
    await apply(
        store,
        [
            e(ev.ORDER, OID2, 1, ev.ORDER_PLACED, {**PLACED, "order_number": "ORD-2"}),
            rename(2, name="Ada L."),
        ],
    )
    docs = await store.all_documents()
    assert {d.customer_name for d in docs.values() if isinstance(d, shop_pb2.Order)} == {"Ada L."}


async def test_placement_after_rename_in_the_same_batch_keeps_its_payload() -> None:
    store = await orders_store()
    await apply(
        store,
        [
            rename(2, name="Ada L."),
            e(
                ev.ORDER,
                OID,
                1,
                ev.ORDER_PLACED,
                {**PLACED, "customer": {**PLACED["customer"], "name": "Ada L."}},
            ),
        ],
    )
    doc = (await store.load([OID]))[OID]
    assert isinstance(doc, shop_pb2.Order) and doc.customer_name == "Ada L."


async def test_other_customer_events_are_ignored_by_orders() -> None:
    store = await orders_store()
    await apply(store, [e(ev.ORDER, OID, 1, ev.ORDER_PLACED, PLACED)])
    events = [
        e(ev.CUSTOMER, CID, 1, ev.CUSTOMER_CREATED, CUSTOMER),
        rename(2, city="Paris"),
        e(ev.CUSTOMER, CID, 3, ev.CUSTOMER_DELETED, {}),
    ]
    assert await reduce_batch(ORDERS, store, events) == []


async def test_poison_event_raises_with_the_event() -> None:
    store = await built(PRODUCTS)
    bad = e(ev.PRODUCT, PID, 1, ev.PRODUCT_CREATED, {"name": 1})
    with pytest.raises(ReducerError) as raised:
        await reduce_batch(PRODUCTS, store, [bad])
    assert raised.value.event is bad
    assert await store.checkpoint() == ORIGIN
