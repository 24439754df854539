"""The ProjectionStore contract, run against every adapter.

:class:`StoreContract` holds the tests; each adapter's test module subclasses it
and provides the ``new_store`` fixture (an unbuilt live store) and ``lose`` (take
the store's state away, as a Redis restart without persistence would): memory in
tests/unit/test_projection_store_memory.py, Redis and PostgreSQL in
tests/integration/test_projector_stores.py.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import pytest

from common.documents import timestamp
from common.entities import ORDERS, PRODUCTS
from common.entities import Entity as ProjectionKind
from common.event_log import Executor
from common.pb.shop.v1 import shop_pb2
from common.positions import ORIGIN, Position
from projector.errors import CheckpointMoved, StoreLost
from projector.stores.port import Change, ProjectionStore

NewStore = Callable[[ProjectionKind], Awaitable[ProjectionStore]]
Lose = Callable[[ProjectionStore], Awaitable[None]]
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


async def as_it_is(store: ProjectionStore, db: Executor | None) -> Position:
    """A catch-up with nothing to catch up."""
    return await store.checkpoint()


async def built(new_store: NewStore, kind: ProjectionKind) -> ProjectionStore:
    """A live store built empty (an empty copy switched in), at the origin."""
    store = await new_store(kind)
    await store.switch_to(await store.new_copy(), as_it_is)
    return store


class StoreContract:
    """Behaviour every ProjectionStore must have. Subclasses provide the fixtures."""

    @pytest.fixture
    def new_store(self) -> NewStore:
        raise NotImplementedError

    @pytest.fixture
    def lose(self) -> Lose:
        raise NotImplementedError

    async def test_a_new_store_is_empty_at_the_origin(self, new_store: NewStore) -> None:
        store = await built(new_store, PRODUCTS)
        assert await store.checkpoint() == ORIGIN
        assert await store.load([a_product().id]) == {}
        assert await store.all_documents() == {}

    async def test_commit_writes_documents_and_checkpoint(self, new_store: NewStore) -> None:
        store = await built(new_store, PRODUCTS)
        p1, p2 = a_product(1), a_product(2)
        await store.commit(ORIGIN, P1, put(p1, p2))
        assert await store.checkpoint() == P1
        assert await store.load([p1.id, p2.id, a_product(3).id]) == {p1.id: p1, p2.id: p2}
        assert await store.all_documents() == {p1.id: p1, p2.id: p2}

    async def test_commit_replaces_and_deletes(self, new_store: NewStore) -> None:
        store = await built(new_store, PRODUCTS)
        p1, p2 = a_product(1), a_product(2)
        await store.commit(ORIGIN, P1, put(p1, p2))
        p1v2 = a_product(1, category="games", version=2)
        await store.commit(P1, P2, [Change(p1.id, p1, p1v2), Change(p2.id, p2, None)])
        assert await store.all_documents() == {p1.id: p1v2}
        assert await store.checkpoint() == P2

    async def test_commit_without_changes_moves_the_checkpoint(self, new_store: NewStore) -> None:
        store = await built(new_store, PRODUCTS)
        await store.commit(ORIGIN, P3, [])
        assert await store.checkpoint() == P3

    async def test_stale_expected_checkpoint_changes_nothing(self, new_store: NewStore) -> None:
        store = await built(new_store, PRODUCTS)
        p1 = a_product(1)
        await store.commit(ORIGIN, P1, put(p1))
        with pytest.raises(CheckpointMoved) as raised:
            # A second (stale) runner that also read from the origin.
            await store.commit(ORIGIN, P2, [Change(p1.id, None, a_product(1, version=9))])
        assert raised.value.found == P1
        assert await store.checkpoint() == P1
        assert await store.all_documents() == {p1.id: p1}

    async def test_commit_before_it_was_built_raises(self, new_store: NewStore) -> None:
        store = await new_store(PRODUCTS)
        with pytest.raises(CheckpointMoved) as raised:
            await store.commit(ORIGIN, P1, put(a_product(1)))
        assert isinstance(raised.value, StoreLost)
        with pytest.raises(StoreLost):
            await store.checkpoint()
        assert await store.all_documents() == {}

    async def test_a_copy_is_invisible_until_switched_in(self, new_store: NewStore) -> None:
        store = await built(new_store, PRODUCTS)
        p1, p2 = a_product(1), a_product(2)
        await store.commit(ORIGIN, P1, put(p1))
        copy = await store.new_copy()
        assert await copy.checkpoint() == ORIGIN
        await copy.commit(ORIGIN, P2, put(p2))
        assert await store.all_documents() == {p1.id: p1}
        assert await store.checkpoint() == P1

        assert await store.switch_to(copy, as_it_is) == P2
        assert await store.all_documents() == {p2.id: p2}
        assert await store.checkpoint() == P2
        await store.commit(P2, P3, put(p1))  # the live store goes on from the copy
        assert set(await store.all_documents()) == {p1.id, p2.id}

    async def test_a_discarded_copy_is_gone(self, new_store: NewStore) -> None:
        store = await built(new_store, PRODUCTS)
        await store.commit(ORIGIN, P1, put(a_product(1)))
        copy = await store.new_copy()
        await copy.commit(ORIGIN, P2, put(a_product(2)))
        await copy.discard()
        with pytest.raises(StoreLost):
            await copy.checkpoint()
        assert await store.checkpoint() == P1
        assert set(await store.all_documents()) == {a_product(1).id}

    async def test_a_lost_state_is_reported_on_every_path(
        self, new_store: NewStore, lose: Lose
    ) -> None:
        store = await built(new_store, PRODUCTS)
        p1 = a_product(1)
        await store.commit(ORIGIN, P1, put(p1))
        await lose(store)
        with pytest.raises(StoreLost):
            await store.checkpoint()
        with pytest.raises(StoreLost):
            await store.commit(P1, P2, [Change(p1.id, p1, a_product(1, version=2))])
        # A new copy switched in is the way back.
        copy = await store.new_copy()
        await copy.commit(ORIGIN, P1, put(p1))
        await store.switch_to(copy, as_it_is)
        assert await store.checkpoint() == P1
        assert await store.load([p1.id]) == {p1.id: p1}

    async def test_loaded_documents_are_copies(self, new_store: NewStore) -> None:
        store = await built(new_store, PRODUCTS)
        p1 = a_product(1)
        await store.commit(ORIGIN, P1, put(p1))
        loaded = (await store.load([p1.id]))[p1.id]
        assert isinstance(loaded, shop_pb2.Product)
        loaded.name = "mutated"
        assert (await store.load([p1.id]))[p1.id] == p1

    async def test_ids_by_a_filter_field(self, new_store: NewStore) -> None:
        store = await built(new_store, ORDERS)
        o1, o2, o3 = an_order(1, 7), an_order(2, 7), an_order(3, 8)
        await store.commit(ORIGIN, P1, put(o1, o2, o3))
        c7, c8, c9 = (str(uuid.UUID(int=n)) for n in (7, 8, 9))
        found = await store.ids_by("customer_id", [c7, c8, c9])
        assert {k: sorted(v) for k, v in found.items()} == {
            c7: sorted([o1.id, o2.id]),
            c8: [o3.id],
            c9: [],
        }
        shipped = an_order(1, 7, status=shop_pb2.ORDER_STATUS_SHIPPED)
        await store.commit(P1, P2, [Change(o1.id, o1, shipped), Change(o2.id, o2, None)])
        assert await store.ids_by("customer_id", [c7]) == {c7: [o1.id]}
        assert await store.ids_by("status", ["SHIPPED", "PENDING"]) == {
            "SHIPPED": [o1.id],
            "PENDING": [o3.id],
        }
        assert await store.load([o1.id]) == {o1.id: shipped}
