"""The ProjectionStore contract, run against every adapter.

:class:`StoreContract` holds the tests; each adapter's module subclasses it and
provides the ``new_store`` fixture (memory here; Redis and PostgreSQL in
tests/integration/test_projector_stores.py).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import pytest

from common.documents import timestamp
from common.pb.shop.v1 import shop_pb2
from common.positions import ORIGIN, Position
from projector.projections import ORDERS, PRODUCTS, ProjectionKind
from projector.stores.memory_store import MemoryProjectionStore
from projector.stores.port import Change, CheckpointMoved, ProjectionStore

NewStore = Callable[[ProjectionKind], Awaitable[ProjectionStore]]
T0 = datetime(2024, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
P1 = Position(10, 1)
P2 = Position(12, 0)
P3 = Position(15, 7)


def a_product(n: int = 1, *, category: str = "books", version: int = 1) -> shop_pb2.Product:
    return shop_pb2.Product(
        id=str(uuid.UUID(int=n)),
        name=f"p{n}",
        description="d",
        price_cents=100 * n,
        currency="EUR",
        category=category,
        stock=n,
        version=version,
        created_at=timestamp(T0 + timedelta(seconds=n)),
        updated_at=timestamp(T0 + timedelta(seconds=n, minutes=version)),
    )


def an_order(
    n: int, customer: int, *, status: shop_pb2.OrderStatus = shop_pb2.ORDER_STATUS_PENDING
) -> shop_pb2.Order:
    return shop_pb2.Order(
        id=str(uuid.UUID(int=1000 + n)),
        order_number=f"ORD-{n:06d}",
        customer_id=str(uuid.UUID(int=customer)),
        customer_name="Ada",
        customer_email="ada@example.com",
        items=[
            shop_pb2.OrderItem(
                product_id=str(uuid.UUID(int=1)),
                name="p1",
                quantity=2,
                unit_price_cents=100,
                line_total_cents=200,
            )
        ],
        total_cents=200,
        currency="EUR",
        status=status,
        version=1,
        created_at=timestamp(T0 + timedelta(seconds=n)),
        updated_at=timestamp(T0 + timedelta(seconds=n)),
    )


def put(*docs: shop_pb2.Product | shop_pb2.Order) -> list[Change]:
    return [Change(d.id, None, d) for d in docs]


class StoreContract:
    """Behaviour every ProjectionStore must have. Subclasses provide ``new_store``."""

    @pytest.fixture
    def new_store(self) -> NewStore:
        raise NotImplementedError

    async def test_a_new_store_is_empty_at_the_origin(self, new_store: NewStore) -> None:
        store = await new_store(PRODUCTS)
        await store.initialize()
        assert await store.checkpoint() == ORIGIN
        assert await store.load([a_product().id]) == {}
        assert await store.all_documents() == {}

    async def test_commit_writes_documents_and_checkpoint(self, new_store: NewStore) -> None:
        store = await new_store(PRODUCTS)
        await store.initialize()
        p1, p2 = a_product(1), a_product(2)
        await store.commit(ORIGIN, P1, put(p1, p2))
        assert await store.checkpoint() == P1
        assert await store.load([p1.id, p2.id, a_product(3).id]) == {p1.id: p1, p2.id: p2}
        assert await store.all_documents() == {p1.id: p1, p2.id: p2}

    async def test_commit_replaces_and_deletes(self, new_store: NewStore) -> None:
        store = await new_store(PRODUCTS)
        await store.initialize()
        p1, p2 = a_product(1), a_product(2)
        await store.commit(ORIGIN, P1, put(p1, p2))
        p1v2 = a_product(1, category="games", version=2)
        await store.commit(P1, P2, [Change(p1.id, p1, p1v2), Change(p2.id, p2, None)])
        assert await store.all_documents() == {p1.id: p1v2}
        assert await store.checkpoint() == P2

    async def test_commit_without_changes_moves_the_checkpoint(self, new_store: NewStore) -> None:
        store = await new_store(PRODUCTS)
        await store.initialize()
        await store.commit(ORIGIN, P3, [])
        assert await store.checkpoint() == P3

    async def test_stale_expected_checkpoint_changes_nothing(self, new_store: NewStore) -> None:
        store = await new_store(PRODUCTS)
        await store.initialize()
        p1 = a_product(1)
        await store.commit(ORIGIN, P1, put(p1))
        with pytest.raises(CheckpointMoved) as raised:
            # A second (stale) runner that also read from the origin.
            await store.commit(ORIGIN, P2, [Change(p1.id, None, a_product(1, version=9))])
        assert raised.value.found == P1
        assert await store.checkpoint() == P1
        assert await store.all_documents() == {p1.id: p1}

    async def test_commit_before_initialize_raises(self, new_store: NewStore) -> None:
        store = await new_store(PRODUCTS)
        with pytest.raises(CheckpointMoved):
            await store.commit(ORIGIN, P1, put(a_product(1)))

    async def test_initialize_is_idempotent(self, new_store: NewStore) -> None:
        store = await new_store(PRODUCTS)
        await store.initialize()
        await store.commit(ORIGIN, P1, put(a_product(1)))
        await store.initialize()
        assert await store.checkpoint() == P1
        assert len(await store.all_documents()) == 1

    async def test_loaded_documents_are_copies(self, new_store: NewStore) -> None:
        store = await new_store(PRODUCTS)
        await store.initialize()
        p1 = a_product(1)
        await store.commit(ORIGIN, P1, put(p1))
        loaded = (await store.load([p1.id]))[p1.id]
        assert isinstance(loaded, shop_pb2.Product)
        loaded.name = "mutated"
        assert (await store.load([p1.id]))[p1.id] == p1

    async def test_order_ids_by_customer(self, new_store: NewStore) -> None:
        store = await new_store(ORDERS)
        await store.initialize()
        o1, o2, o3 = an_order(1, 7), an_order(2, 7), an_order(3, 8)
        await store.commit(ORIGIN, P1, put(o1, o2, o3))
        c7, c8, c9 = (str(uuid.UUID(int=n)) for n in (7, 8, 9))
        found = await store.order_ids_by_customer([c7, c8, c9])
        assert {k: sorted(v) for k, v in found.items()} == {
            c7: sorted([o1.id, o2.id]),
            c8: [o3.id],
            c9: [],
        }
        shipped = an_order(1, 7, status=shop_pb2.ORDER_STATUS_SHIPPED)
        await store.commit(P1, P2, [Change(o1.id, o1, shipped), Change(o2.id, o2, None)])
        assert await store.order_ids_by_customer([c7]) == {c7: [o1.id]}
        assert await store.load([o1.id]) == {o1.id: shipped}


class TestMemoryStore(StoreContract):
    @pytest.fixture
    def new_store(self) -> NewStore:
        async def make(kind: ProjectionKind) -> ProjectionStore:
            return MemoryProjectionStore(kind)

        return make
