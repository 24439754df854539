"""A projection spread over Redis keyspaces: the shards' hash tags fall one per slot range,
and paging through the merged pages of the shards gives the whole list in order, once."""

from __future__ import annotations

import uuid

from hypothesis import given
from hypothesis import strategies as st
from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from common.cursors import SortKey
from common.redis_keys import ProjectionKeys, keyspaces, shard_tag
from common.segmenting import redis_shards, segment_of
from read_server.sources.base import Page
from read_server.sources.merging import merged_page, shard_page_size


def test_each_shard_tag_hashes_into_its_own_range_of_slots() -> None:
    for name in ("products", "customers", "orders", "suppliers"):
        for count in range(1, 9):
            tags = [shard_tag(name, i, count) for i in range(count)]
            assert len(set(tags)) == count
            for i, tag in enumerate(tags):
                assert tag.startswith(f"{name}#{i}/{count}")
                width = REDIS_CLUSTER_HASH_SLOTS / count
                assert i * width <= key_slot(tag.encode()) < (i + 1) * width, (tag, count)


def test_a_shard_keys_are_all_in_its_slot() -> None:
    keys = ProjectionKeys("p", "orders", (2, 3))
    names = [keys.active, keys.next_gen, keys.checkpoint(4), keys.docs(4), keys.index(4, "all")]
    assert {key_slot(n.encode()) for n in names} == {key_slot(shard_tag("orders", 2, 3).encode())}
    assert keyspaces("p", "orders", 1) == [ProjectionKeys("p", "orders")]
    assert [k.shard for k in keyspaces("p", "orders", 3)] == [(0, 3), (1, 3), (2, 3)]


def test_the_spread_follows_the_segments_only_when_asked() -> None:
    families = ("products", "customers", "orders")
    assert redis_shards("redis:orders=3,pg:orders=2", False, families) == dict.fromkeys(families, 1)
    assert redis_shards("redis:orders=3,pg:orders=2", True, families) == {
        "products": 1,
        "customers": 1,
        "orders": 3,
    }
    assert redis_shards("*=4,redis:products=2", True, families) == {
        "products": 2,
        "customers": 4,
        "orders": 4,
    }


def _shard_page(docs: list[SortKey], after: SortKey | None, size: int) -> Page:
    """What one shard's list.lua gives: its first ``size`` after ``after`` (and whether more
    follow)."""
    newer_first = sorted(docs, key=SortKey.member, reverse=True)
    rest = [k for k in newer_first if after is None or k.member() < after.member()]
    kept = rest[:size]
    more = len(rest) > size
    members = tuple(k.member().encode() for k in kept)
    return Page([k.id.encode() for k in kept], kept[-1] if more else None, members)


class Shards:
    """Shards in memory, read as ProjectionSource reads Redis; records the reads."""

    def __init__(self, docs: list[SortKey], shards: int) -> None:
        self.docs = [[k for k in docs if segment_of(k.id, shards) == i] for i in range(shards)]
        self.reads: list[tuple[int, int]] = []

    async def page(self, after: SortKey | None, size: int) -> Page:
        async def read(shard: int, size: int) -> Page:
            self.reads.append((shard, size))
            return _shard_page(self.docs[shard], after, size)

        return await merged_page(read, len(self.docs), size)


KEYS = st.lists(
    st.builds(SortKey, st.integers(0, 50), st.uuids().map(str)),
    unique_by=lambda k: k.id,
    max_size=40,
)


@given(docs=KEYS, shards=st.integers(1, 5), size=st.integers(1, 7))
async def test_paging_through_merged_shard_pages_gives_the_whole_list_once_in_order(
    docs: list[SortKey], shards: int, size: int
) -> None:
    store = Shards(docs, shards)
    seen: list[bytes] = []
    after: SortKey | None = None
    for _ in range(len(docs) + 2):
        page = await store.page(after, size)
        assert len(page.items) <= size
        assert len(page.items) == size or page.next_key is None
        seen += page.items
        if page.next_key is None:
            break
        after = page.next_key
    expected = sorted(docs, key=SortKey.member, reverse=True)
    assert seen == [k.id.encode() for k in expected]


@given(
    docs=st.lists(
        st.builds(SortKey, st.integers(0, 50), st.uuids().map(str)),
        unique_by=lambda k: k.id,
        min_size=10,
        max_size=80,
    ),
    # Mostly shard 0: pages that draw more from it than it was asked for.
    where=st.lists(st.sampled_from([0] * 8 + [1, 2]), min_size=80, max_size=80),
    size=st.integers(1, 30),
)
async def test_however_the_documents_fall_a_merged_page_is_the_first_of_the_whole_list(
    docs: list[SortKey], where: list[int], size: int
) -> None:
    """Shards filled as the strategy likes, not by the hash: a page crowded into one shard
    is still right (that shard is read again)."""
    store = Shards([], 3)
    for key, shard in zip(docs, where, strict=False):
        store.docs[shard].append(key)
    page = await store.page(None, size)
    expected = sorted(docs, key=SortKey.member, reverse=True)
    assert page.items == [k.id.encode() for k in expected[:size]]
    assert (page.next_key is None) == (len(docs) <= size)


def test_a_shard_is_asked_for_its_share_and_three_deviations_more() -> None:
    assert shard_page_size(50, 3) == 27  # 16.7 + 3 x 3.33, not 50
    assert shard_page_size(20, 3) == 13
    assert shard_page_size(50, 2) == 36
    assert shard_page_size(1, 3) == 1
    assert shard_page_size(2, 2) == 2  # never more than the page


async def test_a_shard_the_page_draws_all_of_is_read_again_with_the_whole_page() -> None:
    # Every document in shard 0: the page takes all 27 it sent, and it has more.
    docs = [SortKey(n, str(uuid.uuid4())) for n in range(400)]
    store = Shards(docs, 3)
    store.docs = [store.docs[0] + store.docs[1] + store.docs[2], [], []]
    page = await store.page(None, 50)
    assert page.items == [k.id.encode() for k in sorted(docs, key=SortKey.member)[::-1][:50]]
    assert store.reads == [(0, 27), (1, 27), (2, 27), (0, 50)]


async def test_a_shard_read_again_that_shrank_puts_another_in_doubt() -> None:
    """Shard 1 holds the newest documents, so it is read again with the whole page;
    meanwhile all but five of them are deleted: the page now takes every document shard 0
    sent, so shard 0 is read again too. The page is still the first ``size`` in order."""
    docs = [SortKey(n, str(uuid.uuid4())) for n in range(360)]
    size, asked = 40, shard_page_size(40, 2)
    shards = [docs[:60], docs[60:]]
    reads: list[tuple[int, int]] = []

    async def read(shard: int, page_size: int) -> Page:
        reads.append((shard, page_size))
        if (shard, page_size) == (1, size):
            shards[1] = shards[1][:5]
        return _shard_page(shards[shard], None, page_size)

    page = await merged_page(read, 2, size)
    remaining = sorted(shards[0] + shards[1], key=SortKey.member, reverse=True)
    assert page.items == [k.id.encode() for k in remaining[:size]]
    assert reads == [(0, asked), (1, asked), (1, size), (0, size)]
    assert asked == 30
