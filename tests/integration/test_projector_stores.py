"""The ProjectionStore contract against Redis and PostgreSQL, plus Redis specifics."""

from __future__ import annotations

import pytest

from common.pb.shop.v1 import shop_pb2
from common.positions import ORIGIN
from projector.bootstrap import Resources
from projector.projections import ORDERS, PRODUCTS, ProjectionKind, member
from projector.stores.pg_store import PgProjectionStore
from projector.stores.port import Change, CheckpointMoved, ProjectionStore
from projector.stores.redis_generations import activate_generation, new_generation
from projector.stores.redis_store import RedisProjectionStore
from tests.unit.test_projector_store_contract import (
    P1,
    P2,
    NewStore,
    StoreContract,
    a_product,
    an_order,
    put,
)

pytestmark = pytest.mark.integration


class TestRedisStore(StoreContract):
    @pytest.fixture
    def new_store(self, resources: Resources) -> NewStore:
        async def make(kind: ProjectionKind) -> ProjectionStore:
            return RedisProjectionStore(resources.redis, resources.settings.redis_prefix, kind)

        return make


class TestPgStore(StoreContract):
    @pytest.fixture
    def new_store(self, resources: Resources) -> NewStore:
        async def make(kind: ProjectionKind) -> ProjectionStore:
            return PgProjectionStore(resources.pool, kind)

        return make


def redis_store(resources: Resources, kind: ProjectionKind) -> RedisProjectionStore:
    return RedisProjectionStore(resources.redis, resources.settings.redis_prefix, kind)


async def test_redis_indexes_follow_the_documents(resources: Resources) -> None:
    store = redis_store(resources, ORDERS)
    await store.initialize()
    o1, o2 = an_order(1, 7), an_order(2, 8)
    await store.commit(ORIGIN, P1, put(o1, o2))
    c7, c8 = o1.customer_id, o2.customer_id
    assert await store.index_members() == {
        "all": {member(o1), member(o2)},
        f"customer:{c7}": {member(o1)},
        f"customer:{c8}": {member(o2)},
        "status:PENDING": {member(o1), member(o2)},
        f"customer_status:{c7}:PENDING": {member(o1)},
        f"customer_status:{c8}:PENDING": {member(o2)},
    }
    shipped = an_order(1, 7, status=shop_pb2.ORDER_STATUS_SHIPPED)
    await store.commit(P1, P2, [Change(o1.id, o1, shipped), Change(o2.id, o2, None)])
    assert await store.index_members() == {
        "all": {member(o1)},
        f"customer:{c7}": {member(o1)},
        "status:SHIPPED": {member(o1)},
        f"customer_status:{c7}:SHIPPED": {member(o1)},
    }
    # Members sort like (created_at, id): newest first with ZRANGE BYLEX REV.
    key = store.keys.index(store.generation or 0, "all")
    assert await resources.redis.zrange(key, "+", "-", bylex=True, desc=True) == [
        member(o1).encode()
    ]


async def test_redis_product_category_index_moves(resources: Resources) -> None:
    store = redis_store(resources, PRODUCTS)
    await store.initialize()
    p1 = a_product(1, category="books")
    await store.commit(ORIGIN, P1, put(p1))
    games = a_product(1, category="games", version=2)
    await store.commit(P1, P2, [Change(p1.id, p1, games)])
    assert await store.index_members() == {"all": {member(p1)}, "category:games": {member(p1)}}


async def test_redis_commit_fails_once_the_generation_is_replaced(resources: Resources) -> None:
    live = redis_store(resources, PRODUCTS)
    await live.initialize()
    await live.commit(ORIGIN, P1, put(a_product(1)))
    gen = await new_generation(resources.redis, live.keys)
    rebuilt = RedisProjectionStore(
        resources.redis, resources.settings.redis_prefix, PRODUCTS, generation=gen
    )
    await rebuilt.commit(ORIGIN, P1, put(a_product(2)))  # unpublished: no active check
    assert (await activate_generation(resources.redis, live.keys, gen)).switched
    with pytest.raises(CheckpointMoved):
        await live.commit(P1, P2, put(a_product(3)))
    assert await live.checkpoint() == P1  # now resolved to the new generation
    assert live.generation == gen
    assert set(await live.all_documents()) == {a_product(2).id}


async def test_redis_switch_refuses_a_generation_that_is_behind(resources: Resources) -> None:
    live = redis_store(resources, PRODUCTS)
    await live.initialize()
    await live.commit(ORIGIN, P2, [])
    gen = await new_generation(resources.redis, live.keys)
    result = await activate_generation(resources.redis, live.keys, gen)
    assert not result.switched and result.active_checkpoint == P2
