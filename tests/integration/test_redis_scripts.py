"""The scripts' contract with their callers (common/redis_scripts.py, common/lua): keys are
named for a guessed generation; a wrong guess is answered "moved" and changes nothing; a page's
documents are read only if nothing committed since its members were listed."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from common import redis_scripts
from common.redis_client import redis_client
from common.redis_keys import ProjectionKeys
from tests.conftest import REDIS_URL, delete_redis_prefix

pytestmark = pytest.mark.integration

CP1, CP2 = "0000000000000000001:0000000001", "0000000000000000002:0000000001"


@pytest.fixture
async def client() -> AsyncIterator[aioredis.Redis]:
    client = redis_client(REDIS_URL, max_connections=4)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def keys(client: aioredis.Redis) -> AsyncIterator[ProjectionKeys]:
    """Generation 2 of a projection active at CP1, holding documents a and b."""
    prefix = f"test-scripts-{uuid.uuid4().hex[:8]}"
    keys = ProjectionKeys(prefix, "orders")
    await client.set(keys.active, "2")
    await client.set(keys.checkpoint(2), CP1)
    await client.hset(keys.docs(2), mapping={"a": b"A", "b": b"B"})
    await client.zadd(keys.index(2, "all"), {"0000000000000001|a": 0, "0000000000000002|b": 0})
    try:
        yield keys
    finally:
        await delete_redis_prefix(prefix)


async def test_a_wrong_guess_is_answered_moved_then_the_right_one_reads(
    client: aioredis.Redis, keys: ProjectionKeys
) -> None:
    get = client.register_script(redis_scripts.script(*redis_scripts.GET))
    asked: list[int] = []

    async def attempt(gen: int) -> list[object]:
        asked.append(gen)
        return await get(  # type: ignore[no-any-return]
            keys=[keys.active, keys.next_gen, keys.checkpoint(gen), keys.docs(gen)],
            args=[gen, "", "a"],
        )

    guesses = redis_scripts.GenerationGuesses()
    assert await guesses.call(keys, attempt) == [2, b"A", CP1.encode()]
    assert asked == [0, 2]  # nothing known, then the generation the script named
    assert await guesses.call(keys, attempt) == [2, b"A", CP1.encode()]
    assert asked == [0, 2, 2]  # remembered: one call
    await client.set(keys.active, "7")  # a switch (generation 7 has no checkpoint: lost)
    assert await guesses.call(keys, attempt) == [0, b"lost"]
    assert asked[-2:] == [2, 7]


async def test_a_page_and_its_documents_are_read_in_one_call(
    client: aioredis.Redis, keys: ProjectionKeys
) -> None:
    listed = client.register_script(redis_scripts.script(*redis_scripts.LIST))
    page = [keys.active, keys.next_gen, keys.checkpoint(2), keys.index(2, "all"), keys.docs(2)]
    members = [b"0000000000000002|b", b"0000000000000001|a"]
    assert await listed(keys=page, args=[2, "", "+", 10]) == [
        2,
        members,
        [b"B", b"A"],
        CP1.encode(),
    ]
    # After a member, at most ARGV[4]; past the end, an empty page.
    after_b = "(" + members[0].decode()
    assert await listed(keys=page, args=[2, "", after_b, 1]) == [
        2,
        members[1:],
        [b"A"],
        CP1.encode(),
    ]
    assert await listed(keys=page, args=[2, "", "(" + members[1].decode(), 5]) == [
        2,
        [],
        [],
        CP1.encode(),
    ]
    # A member without its document (only damage does that) reads as nil, for the caller
    # to refuse.
    await client.hdel(keys.docs(2), "a")
    assert await listed(keys=page, args=[2, "", "+", 10]) == [
        2,
        members,
        [b"B", None],
        CP1.encode(),
    ]
    # Behind the token: no page.
    assert await listed(keys=page, args=[2, CP2, "+", 10]) == [1]


async def test_a_guess_that_never_settles_gives_up(keys: ProjectionKeys) -> None:
    calls = 0

    async def always_moved(gen: int) -> list[object]:
        nonlocal calls
        calls += 1
        return [redis_scripts.MOVED, str(gen + 1).encode()]

    with pytest.raises(redis_scripts.GenerationMoving):
        await redis_scripts.GenerationGuesses().call(keys, always_moved)
    assert calls == 4
