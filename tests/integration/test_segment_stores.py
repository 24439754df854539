"""Split projections (projector.segments) in the real stores: a copy is built whole and
split when switched in; each segment commits its own checkpoint (compare-and-set), the
projection's is the lowest of them, what the readers see; a process running another
split finds the projection lost (a rebuild), never a checkpoint it would misread."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from common.changes import ChangeMessage
from common.entities import PRODUCTS
from common.positions import Position
from common.projection_checkpoints import RedisCheckpoints, pg_checkpoints
from projector.bootstrap import App
from projector.errors import CheckpointMoved, StoreLost
from projector.segments import Segment, all_segments, segment_of
from projector.stores.pg_store import PgProjectionStore
from projector.stores.port import SplittableStore
from projector.stores.redis_store import RedisProjectionStore
from tests.contract.projection_store import P1, P2, P3, a_product, as_it_is, put

pytestmark = pytest.mark.integration

Make = Callable[[int], SplittableStore]
Readers = Callable[[], Awaitable[Position | None]]


def _redis(app: App) -> Make:
    def make(segments: int) -> SplittableStore:
        return RedisProjectionStore(
            app.redis, app.settings.redis_prefix, PRODUCTS, grace_s=0.05, segments=segments
        )

    return make


def _pg(app: App) -> Make:
    def make(segments: int) -> SplittableStore:
        return PgProjectionStore(app.pool, PRODUCTS, segments=segments)

    return make


async def _readers_redis(app: App) -> Position | None:
    """The checkpoint as the read server and the write server's backlog read it."""
    return (await RedisCheckpoints(app.redis, app.settings.redis_prefix).read()).get(
        "redis:products"
    )


async def _readers_pg(app: App) -> Position | None:
    return (await pg_checkpoints(app.pool)).get("pg:products")


@pytest.fixture(params=["redis", "pg"])
def backend(request: pytest.FixtureRequest, app: App) -> tuple[Make, Readers]:
    if request.param == "redis":
        return _redis(app), lambda: _readers_redis(app)
    return _pg(app), lambda: _readers_pg(app)


async def _parts(live: SplittableStore) -> list[SplittableStore]:
    """Its segments, each having read its checkpoint (as a runner does before a batch)."""
    parts = [live.split(s) for s in all_segments(live.segments)]
    for part in parts:
        await part.checkpoint()
    return parts


async def _built(make: Make, segments: int, at: Position) -> SplittableStore:
    """A projection built whole up to ``at`` and switched in split into ``segments``."""
    live = make(segments)
    copy = await live.new_copy()
    docs = [a_product(n) for n in range(1, 9)]
    await copy.commit((await copy.checkpoint()), at, put(*docs))

    async def caught_up(store: object, db: object) -> Position:
        return at

    await live.switch_to(copy, caught_up)
    return live


async def test_a_copy_is_split_when_switched_in(backend: tuple[Make, Readers]) -> None:
    make, readers = backend
    live = await _built(make, 4, P1)
    assert await live.checkpoint() == P1
    for seg in all_segments(4):
        assert await live.split(seg).checkpoint() == P1
    assert await readers() == P1
    assert len(await live.all_documents()) == 8


async def test_the_projection_stands_at_its_lowest_segment(backend: tuple[Make, Readers]) -> None:
    make, readers = backend
    live = await _built(make, 4, P1)
    parts = await _parts(live)
    doc = a_product(20)
    owner = segment_of(doc.id, 4)
    await parts[owner].commit(P1, P3, put(doc))
    assert await parts[owner].checkpoint() == P3
    assert await live.checkpoint() == P1  # the others have not passed P1
    assert await readers() == P1
    others = [p for i, p in enumerate(parts) if i != owner]
    await others[0].commit(P1, P2, [])
    assert await live.checkpoint() == P1
    for part in others[1:]:
        await part.commit(P1, P2, [])
    assert await live.checkpoint() == P2  # every segment passed P2; one is at P3
    assert await readers() == P2
    assert doc.id in await live.all_documents()


async def test_each_segment_compares_and_sets_its_own_checkpoint(
    backend: tuple[Make, Readers],
) -> None:
    make, _ = backend
    live = await _built(make, 2, P1)
    first, second = await _parts(live)
    await first.commit(P1, P2, [])
    with pytest.raises(CheckpointMoved):
        await first.commit(P1, P3, put(a_product(30)))  # a stale runner of segment 0
    await second.commit(P1, P3, [])  # segment 1 is still at P1: its own compare-and-set
    assert await first.checkpoint() == P2
    assert a_product(30).id not in await live.all_documents()


async def test_a_split_projection_commits_through_its_segments_only(
    backend: tuple[Make, Readers],
) -> None:
    make, _ = backend
    live = await _built(make, 2, P1)
    with pytest.raises(TypeError):
        await live.commit(P1, P2, [])


async def test_another_split_is_a_lost_projection(backend: tuple[Make, Readers]) -> None:
    make, _ = backend
    await _built(make, 4, P1)
    with pytest.raises(StoreLost, match="split into 4"):
        await make(2).checkpoint()
    with pytest.raises(StoreLost, match="split into 4"):
        await make(1).checkpoint()
    with pytest.raises(StoreLost):
        await make(2).split(Segment(0, 2)).checkpoint()
    # Rebuilt with two: the four segments' checkpoints are gone with the old copy.
    two = await _built(make, 2, P2)
    assert await two.checkpoint() == P2
    with pytest.raises(StoreLost):
        await make(4).split(Segment(3, 4)).checkpoint()
    one = await _built(make, 1, P3)  # back to one: no segment left behind
    assert await one.checkpoint() == P3


async def test_the_readers_are_told_the_lowest_checkpoint(app: App) -> None:
    """A segment's batch publishes the projection's checkpoint (the near-caches learn how
    fresh the projection is from it), not the segment's own."""
    live = await _built(_redis(app), 2, P1)
    assert isinstance(live, RedisProjectionStore)
    pubsub = app.redis.pubsub()
    await pubsub.subscribe(live.keys.changes)
    try:
        await pubsub.get_message(timeout=1)  # the subscription's confirmation
        doc = a_product(40)
        part = (await _parts(live))[segment_of(doc.id, 2)]
        await part.commit(P1, P3, put(doc))
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=5)
        assert message is not None
        change = ChangeMessage.decode(message["data"])
        assert change.checkpoint == P1
        assert change.ids == {doc.id}
    finally:
        await pubsub.unsubscribe()
        await pubsub.aclose()


async def test_the_copy_is_built_whole(app: App) -> None:
    """What a rebuild fills is the whole projection, whatever the split: as_it_is (the
    contract's catch-up) works on it unchanged."""
    live = _pg(app)(3)
    copy = await live.new_copy()
    assert isinstance(copy, PgProjectionStore) and copy.segment is None
    await live.switch_to(copy, as_it_is)
    assert {await live.split(s).checkpoint() for s in all_segments(3)} == {await live.checkpoint()}
