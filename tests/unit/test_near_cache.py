"""The near-cache shelf: what it keeps, what drops it, the fill race, and its bounds
(documents and bytes; the bytes checked against what tracemalloc sees held)."""

from __future__ import annotations

import os
import tracemalloc
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.changes import BadChangeMessage, ChangeMessage
from common.cursors import SortKey
from common.positions import Position
from read_server.sources.base import Freshness, Page
from read_server.sources.near_cache import DEFAULT_MAX_BYTES, HISTORY, MISS, PageKey, Shelf

ANY = Freshness()
ALL: PageKey = ("idx:all", "+", 2)


def batch(
    seq: int, ids: Iterable[str] = (), indexes: Iterable[str] = (), g: int = 1
) -> ChangeMessage:
    return ChangeMessage(g, Position(1, seq), frozenset(ids), frozenset(indexes))


def live_shelf(max_documents: int = 1000, max_bytes: int = DEFAULT_MAX_BYTES) -> Shelf:
    shelf = Shelf("products", max_documents, max_bytes)
    shelf.subscribed()
    shelf.apply(batch(1))
    return shelf


def a_page(*ids: str) -> Page:
    return Page([i.encode() for i in ids], SortKey(1, ids[-1]) if ids else None)


def test_nothing_is_served_or_kept_before_the_subscription_is_confirmed() -> None:
    shelf = Shelf("products", 1000)
    assert not shelf.serves(ANY)
    shelf.keep_doc(shelf.epoch, "a", b"A")
    assert len(shelf) == 0


def test_a_kept_document_is_served_until_a_batch_names_it() -> None:
    shelf = live_shelf()
    shelf.keep_doc(shelf.epoch, "a", b"A")
    shelf.keep_doc(shelf.epoch, "gone", None)
    assert shelf.doc("a") == b"A"
    assert shelf.doc("gone") is None  # "no such document" is an answer too
    shelf.apply(batch(2, {"b"}))
    assert shelf.doc("a") == b"A"
    shelf.apply(batch(3, {"a", "gone"}))
    assert shelf.doc("a") is MISS and shelf.doc("gone") is MISS
    assert len(shelf) == 0


def test_a_fill_that_raced_a_batch_naming_it_is_not_kept() -> None:
    shelf = live_shelf()
    since = shelf.epoch  # the read starts ...
    shelf.apply(batch(2, {"a"}))  # ... a batch changes `a` and its message is handled ...
    shelf.keep_doc(since, "a", b"old A")  # ... then the (maybe older) answer arrives
    assert shelf.doc("a") is MISS
    shelf.keep_doc(since, "b", b"B")  # a batch that did not touch `b` does not matter
    assert shelf.doc("b") == b"B"


def test_a_fill_older_than_the_history_is_not_kept() -> None:
    shelf = live_shelf()
    since = shelf.epoch
    for seq in range(2, HISTORY + 3):
        shelf.apply(batch(seq, {"other"}))
    shelf.keep_doc(since, "a", b"A")
    assert shelf.doc("a") is MISS


def test_pages_drop_when_their_index_or_one_of_their_documents_changes() -> None:
    shelf = live_shelf()
    shelf.keep_page(shelf.epoch, ALL, a_page("a", "b"), ("a", "b"))
    by_books: PageKey = ("idx:category:books", "+", 2)
    shelf.keep_page(shelf.epoch, by_books, a_page("b"), ("b",))
    assert shelf.page(ALL) == a_page("a", "b")
    shelf.apply(batch(2, {"c"}, {"idx:category:games"}))
    assert shelf.page(ALL) is not MISS and shelf.page(by_books) is not MISS
    shelf.apply(batch(3, set(), {"idx:all"}))  # membership of `all` changed
    assert shelf.page(ALL) is MISS and shelf.page(by_books) is not MISS
    shelf.apply(batch(4, {"b"}))  # a document on the page changed
    assert shelf.page(by_books) is MISS
    assert len(shelf) == 0


def test_a_page_fill_that_raced_its_index_or_documents_is_not_kept() -> None:
    shelf = live_shelf()
    since = shelf.epoch
    shelf.apply(batch(2, set(), {"idx:all"}))
    shelf.keep_page(since, ALL, a_page("a"), ("a",))
    assert shelf.page(ALL) is MISS
    since = shelf.epoch
    shelf.apply(batch(3, {"a"}))
    shelf.keep_page(since, ALL, a_page("a"), ("a",))
    assert shelf.page(ALL) is MISS


def test_a_token_is_served_only_once_the_shelf_has_heard_of_its_position() -> None:
    shelf = live_shelf()
    token = Freshness(Position(1, 5), 1.0)
    assert not shelf.serves(token)
    shelf.apply(batch(5))
    assert shelf.serves(token)
    assert shelf.serves(Freshness(Position(1, 4), 1.0))


def test_a_new_subscription_knows_no_checkpoint_until_a_message_says_one() -> None:
    shelf = Shelf("products", 1000)
    shelf.subscribed()
    assert shelf.serves(ANY)
    assert not shelf.serves(Freshness(Position(0, 1), 1.0))


@pytest.mark.parametrize(
    "message",
    [
        ChangeMessage(2, Position(1, 9), frozenset(), frozenset(), switch=True),
        batch(9, g=2),  # a batch of another generation: the switch was missed
    ],
    ids=["switch", "other generation"],
)
def test_a_new_generation_drops_everything_and_every_fill_under_way(
    message: ChangeMessage,
) -> None:
    shelf = live_shelf()
    shelf.keep_doc(shelf.epoch, "a", b"A")
    since = shelf.epoch
    shelf.apply(message)
    assert shelf.doc("a") is MISS
    shelf.keep_doc(since, "b", b"B")
    assert shelf.doc("b") is MISS
    assert (shelf.generation, shelf.checkpoint) == (2, Position(1, 9))


def test_a_lost_subscription_empties_the_shelf_and_stops_serving() -> None:
    shelf = live_shelf()
    shelf.keep_doc(shelf.epoch, "a", b"A")
    since = shelf.epoch
    shelf.lost("connection lost")
    assert not shelf.serves(ANY) and len(shelf) == 0
    shelf.subscribed()
    shelf.keep_doc(since, "a", b"A")  # began before the loss
    assert shelf.doc("a") is MISS


def test_the_shelf_holds_at_most_its_bound_oldest_first() -> None:
    shelf = live_shelf(max_documents=5)
    for n in range(4):
        shelf.keep_doc(shelf.epoch, f"d{n}", b"x")
    shelf.keep_page(shelf.epoch, ALL, a_page("p", "q"), ("p", "q"))  # counts 3
    assert len(shelf) <= 5
    assert shelf.page(ALL) is not MISS
    assert shelf.doc("d0") is MISS and shelf.doc("d1") is MISS and shelf.doc("d3") == b"x"
    shelf.apply(batch(2, {"p"}))
    assert len(shelf) == 2


def a_doc(size: int) -> bytes:
    return os.urandom(size)  # a bytes object of its own, as Redis replies are


def test_the_shelf_stays_under_its_byte_bound_fed_many_large_entries() -> None:
    """Pages of distinct keys (every page size is a key) hold the same documents many
    times over: a count of documents does not bound them, the bytes do."""
    bound = 2 * 1024 * 1024
    shelf = live_shelf(max_documents=10**9, max_bytes=bound)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        ids = tuple(str(uuid.uuid4()) for _ in range(20))
        for n in range(1, 400):
            page = Page([a_doc(5000) for _ in ids], None)
            category = "idx:category:" + "c" * 200
            shelf.keep_page(shelf.epoch, (category, "+", 20 + n), page, ids)
            shelf.keep_doc(shelf.epoch, str(uuid.uuid4()), a_doc(5000))
            assert shelf.bytes_held <= bound
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    # 400 pages of 100 kB and 400 documents of 5 kB went by: 42 MB without the bound.
    assert held <= bound * 1.1, f"{held / 1e6:.1f} MB held"
    assert shelf.page((category, "+", 20 + 399)) is not MISS  # the newest stay


@pytest.mark.parametrize(
    ("pages", "per_page", "size", "category"),
    [(0, 0, 0, 0), (0, 0, 100, 0), (3000, 0, 0, 200), (2000, 1, 1, 0), (500, 10, 100, 200),
     (20, 1000, 1, 0), (50, 20, 5000, 200)],
)  # fmt: skip
def test_the_byte_count_never_falls_short_of_the_memory_held(
    pages: int, per_page: int, size: int, category: int
) -> None:
    """What the shelf counts is at least what Python allocates to hold it (tracemalloc),
    for gets (``pages`` 0: 5000 of them) and pages of any shape."""
    shelf = live_shelf(max_documents=10**9, max_bytes=10**12)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        if pages == 0:
            for _ in range(5000):
                shelf.keep_doc(shelf.epoch, str(uuid.uuid4()), a_doc(size) if size else None)
        for n in range(pages):
            ids = tuple(str(uuid.uuid4()) for _ in range(per_page))
            key = (f"idx:category:{'☃' * category}{n}", "+", per_page)
            shelf.keep_page(shelf.epoch, key, Page([a_doc(size) for _ in ids], None), ids)
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert held <= shelf.bytes_held, (held, shelf.bytes_held)


def test_an_entry_larger_than_a_bound_is_not_kept() -> None:
    shelf = live_shelf(max_documents=3, max_bytes=10_000)
    shelf.keep_doc(shelf.epoch, "small", b"x")
    shelf.keep_doc(shelf.epoch, "big", a_doc(10_001))
    assert shelf.doc("big") is MISS and shelf.doc("small") == b"x"
    shelf.keep_page(shelf.epoch, ALL, a_page("a", "b", "c"), ("a", "b", "c"))  # 4 documents
    assert shelf.page(ALL) is MISS and shelf.doc("small") == b"x"
    shelf.apply(batch(2, {"small"}))
    assert len(shelf) == 0 and shelf.bytes_held == 0


def test_change_messages_round_trip_and_strangers_are_refused() -> None:
    message = ChangeMessage(3, Position(7, 8), frozenset({"a", "b"}), frozenset({"idx:all"}))
    assert ChangeMessage.decode(message.encode()) == message
    switch = ChangeMessage.decode(
        b'{"g": 4, "c": "00000000000000000007:00000000000000000009", "switch": true}'
    )
    assert switch.switch and switch.generation == 4 and switch.checkpoint == Position(7, 9)
    for junk in (b"", b"[]", b'{"g": "1"}', b'{"g": 1, "c": "x", "ids": [], "idx": []}',
                 b'{"g": 1, "c": "", "ids": [1], "idx": []}', b'{"g": true}'):  # fmt: skip
        with pytest.raises(BadChangeMessage):
            ChangeMessage.decode(junk)


# -- a model of the race: reads, commits and late messages in any interleaving ----------


@dataclass
class World:
    """Redis (a version per document, bumped by each batch) and the messages in flight."""

    versions: dict[str, int] = field(default_factory=lambda: dict.fromkeys("abc", 0))
    history: list[dict[str, int]] = field(default_factory=list)  # versions after batch n
    in_flight: list[ChangeMessage] = field(default_factory=list)

    def commit(self, ids: set[str]) -> None:
        for i in ids:
            self.versions[i] += 1
        self.history.append(dict(self.versions))
        self.in_flight.append(batch(len(self.history) + 1, ids))


steps = st.lists(
    st.one_of(
        st.tuples(st.just("commit"), st.sets(st.sampled_from("abc"), min_size=1)),
        st.tuples(st.just("deliver"), st.just(None)),
        st.tuples(st.just("start"), st.sampled_from("abc")),
        st.tuples(st.just("finish"), st.integers(0, 5)),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(steps)
def test_the_shelf_is_never_older_than_its_checkpoint(program: list[tuple[str, object]]) -> None:
    """Whatever the interleaving, every cached document is at least as new as Redis was
    at the shelf's checkpoint: a reader holding a token the shelf serves never sees older."""
    world = World()
    shelf = Shelf("products", 1000)
    shelf.subscribed()
    world.commit(set())
    reads: list[tuple[int, str, int]] = []  # (epoch at start, id, version read)
    for op, arg in program:
        if op == "commit":
            world.commit(set(arg))  # type: ignore[arg-type]
        elif op == "deliver" and world.in_flight:
            shelf.apply(world.in_flight.pop(0))
        elif op == "start":
            ident = str(arg)
            reads.append((shelf.epoch, ident, world.versions[ident]))
        elif op == "finish" and reads:
            since, ident, version = reads.pop(int(arg) % len(reads))  # type: ignore[call-overload]
            shelf.keep_doc(since, ident, str(version).encode())
        if shelf.checkpoint is None:
            continue
        at_checkpoint = world.history[shelf.checkpoint.seq - 2]
        for ident in "abc":
            cached = shelf.doc(ident)
            if cached is not MISS:
                assert cached is not None
                assert int(cached) >= at_checkpoint[ident], (ident, cached, at_checkpoint)
