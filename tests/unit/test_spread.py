"""A projection spread over Redis keyspaces: the shards' hash tags fall one per slot range,
and paging through the merged pages of the shards gives the whole list in order, once."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from common.cursors import SortKey
from common.redis_keys import ProjectionKeys, keyspaces, shard_tag
from common.segmenting import redis_shards, segment_of
from read_server.sources.base import Page
from read_server.sources.projection import merge_pages


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
    """What one shard's list.lua + docs.lua give: its first ``size`` after ``after``."""
    newer_first = sorted(docs, key=SortKey.member, reverse=True)
    rest = [k for k in newer_first if after is None or k.member() < after.member()]
    kept = rest[:size]
    more = len(rest) > size
    members = tuple(k.member().encode() for k in kept)
    return Page([k.id.encode() for k in kept], kept[-1] if more else None, members)


KEYS = st.lists(
    st.builds(SortKey, st.integers(0, 50), st.uuids().map(str)),
    unique_by=lambda k: k.id,
    max_size=40,
)


@given(docs=KEYS, shards=st.integers(1, 5), size=st.integers(1, 7))
def test_paging_through_merged_shard_pages_gives_the_whole_list_once_in_order(
    docs: list[SortKey], shards: int, size: int
) -> None:
    by_shard = [[k for k in docs if segment_of(k.id, shards) == i] for i in range(shards)]
    seen: list[bytes] = []
    after: SortKey | None = None
    for _ in range(len(docs) + 2):
        page = merge_pages([_shard_page(d, after, size) for d in by_shard], size)
        assert len(page.items) <= size
        assert len(page.items) == size or page.next_key is None
        seen += page.items
        if page.next_key is None:
            break
        after = page.next_key
    expected = sorted(docs, key=SortKey.member, reverse=True)
    assert seen == [k.id.encode() for k in expected]
