"""The ProjectionStore contract against Redis and PostgreSQL, plus Redis specifics."""

from __future__ import annotations

import pytest
import redis.exceptions

from common.entities import ORDERS, PRODUCTS
from common.entities import Entity as ProjectionKind
from common.pb.shop.v1 import shop_pb2
from common.positions import ORIGIN
from projector.bootstrap import App
from projector.errors import CheckpointMoved
from projector.projections import member
from projector.stores.pg_store import PgProjectionStore
from projector.stores.port import Change, ProjectionStore
from projector.stores.redis_generations import activate_generation, new_generation
from projector.stores.redis_store import RedisProjectionStore
from tests.conftest import delete_redis_prefix
from tests.contract.projection_store import (
    P1,
    P2,
    Lose,
    NewStore,
    StoreContract,
    a_product,
    an_order,
    as_it_is,
    put,
)

pytestmark = pytest.mark.integration


def redis_store(app: App, kind: ProjectionKind) -> RedisProjectionStore:
    return RedisProjectionStore(app.redis, app.settings.redis_prefix, kind, grace_s=0.05)


class TestRedisStore(StoreContract):
    @pytest.fixture
    def new_store(self, app: App) -> NewStore:
        async def make(kind: ProjectionKind) -> ProjectionStore:
            return redis_store(app, kind)

        return make

    @pytest.fixture
    def lose(self, app: App) -> Lose:
        async def lose(store: ProjectionStore) -> None:
            await delete_redis_prefix(app.settings.redis_prefix)  # as FLUSHDB would

        return lose


class TestPgStore(StoreContract):
    @pytest.fixture
    def new_store(self, app: App) -> NewStore:
        async def make(kind: ProjectionKind) -> ProjectionStore:
            return PgProjectionStore(app.pool, kind)

        return make

    @pytest.fixture
    def lose(self, app: App) -> Lose:
        async def lose(store: ProjectionStore) -> None:
            assert isinstance(store, PgProjectionStore)
            await app.pool.execute(f"TRUNCATE {store.table}")
            await app.pool.execute(
                "DELETE FROM read.projection_checkpoints WHERE projection = $1", store.name
            )

        return lose


async def built_redis(app: App, kind: ProjectionKind) -> RedisProjectionStore:
    store = redis_store(app, kind)
    await store.switch_to(await store.new_copy(), as_it_is)
    return store


async def test_redis_indexes_follow_the_documents(app: App) -> None:
    store = await built_redis(app, ORDERS)
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
    assert await app.redis.zrange(key, "+", "-", bylex=True, desc=True) == [member(o1).encode()]
    indexes = await store.integrity_state()
    assert indexes.problems({o1.id: shipped}, ()) == []
    assert indexes.problems({}, ()) == [f"idx:all: extra member {member(o1)}"] + [
        f"idx:{suffix}: extra member {member(o1)}"
        for suffix in sorted((f"customer:{c7}", f"customer_status:{c7}:SHIPPED", "status:SHIPPED"))
    ]
    # A document in flight (changed after the checkpoint verify read) is not judged.
    assert indexes.problems({}, {o1.id}) == []


async def test_redis_product_category_index_moves(app: App) -> None:
    store = await built_redis(app, PRODUCTS)
    p1 = a_product(1, category="books")
    await store.commit(ORIGIN, P1, put(p1))
    games = a_product(1, category="games", version=2)
    await store.commit(P1, P2, [Change(p1.id, p1, games)])
    assert await store.index_members() == {"all": {member(p1)}, "category:games": {member(p1)}}


async def test_a_redis_batch_that_fails_inside_the_script_moves_no_checkpoint(app: App) -> None:
    """apply_batch.lua sets the checkpoint last: a write that fails inside the script (here
    a ZADD to a key of the wrong type, WRONGTYPE) leaves the checkpoint where it was, so the
    batch is retried, never skipped. With the SET moved first, the checkpoint would move."""
    store = await built_redis(app, PRODUCTS)
    p1 = a_product(1, category="books")
    await store.commit(ORIGIN, P1, put(p1))
    gen = store.generation or 0
    await app.redis.set(store.keys.index(gen, "category:games"), "not a sorted set")
    games = a_product(1, category="games", version=2)
    with pytest.raises(redis.exceptions.ResponseError, match="WRONGTYPE"):
        await store.commit(P1, P2, [Change(p1.id, p1, games)])
    assert await store.checkpoint() == P1


async def test_redis_commit_fails_once_the_generation_is_replaced(app: App) -> None:
    live = await built_redis(app, PRODUCTS)
    await live.commit(ORIGIN, P1, put(a_product(1)))
    gen = await new_generation(app.redis, live.keys)
    rebuilt = RedisProjectionStore(app.redis, app.settings.redis_prefix, PRODUCTS, generation=gen)
    await rebuilt.commit(ORIGIN, P1, put(a_product(2)))  # unpublished: no active check
    assert (await activate_generation(app.redis, live.keys, gen)).switched
    with pytest.raises(CheckpointMoved):
        await live.commit(P1, P2, put(a_product(3)))
    assert await live.checkpoint() == P1  # now resolved to the new generation
    assert live.generation == gen
    assert set(await live.all_documents()) == {a_product(2).id}


async def test_redis_switch_refuses_a_generation_that_is_behind(app: App) -> None:
    live = await built_redis(app, PRODUCTS)
    await live.commit(ORIGIN, P2, [])
    gen = await new_generation(app.redis, live.keys)
    result = await activate_generation(app.redis, live.keys, gen)
    assert not result.switched and result.active_checkpoint == P2


async def test_redis_switch_catches_a_copy_up_until_it_is_not_behind(app: App) -> None:
    live = await built_redis(app, PRODUCTS)
    await live.commit(ORIGIN, P2, [])
    copy = await live.new_copy()
    calls = 0

    async def catch_up(store: ProjectionStore, db: object) -> object:
        nonlocal calls
        calls += 1
        if calls == 2:  # the second round gets it past the live checkpoint
            await store.commit(ORIGIN, P2, put(a_product(5)))
        return await store.checkpoint()

    assert await live.switch_to(copy, catch_up) == P2
    assert calls == 2
    assert set(await live.all_documents()) == {a_product(5).id}
