"""The Watch hub in memory: limits, one read per document at a time, nothing offered
twice, a bounded buffer per stream, feeds by customer, shutdown (a hand-written reader
stands in for Redis)."""

from __future__ import annotations

import asyncio

import pytest

from common.changes import ChangeMessage
from common.entities import ORDERS, PRODUCTS, Entity
from common.errors import ResourceExhausted
from common.pb.shop.v1 import shop_pb2
from common.positions import Position
from read_server.sources.base import Freshness
from read_server.watch.hub import (
    CHANGE,
    RESYNC,
    Ending,
    FellBehind,
    Subscription,
    Update,
    WatchHub,
    WatchLimits,
)

ID = "00000000-0000-4000-8000-000000000001"


class FakeReader:
    """Documents by (projection, id) at a position; ``gate`` holds reads while clear."""

    def __init__(self) -> None:
        self.docs: dict[tuple[str, str], bytes | None] = {}
        self.position = Position(10, 1)
        self.reads: list[tuple[str, str]] = []
        self.gate = asyncio.Event()
        self.gate.set()

    async def current(
        self, entity: Entity, ident: str, freshness: Freshness
    ) -> tuple[bytes | None, Position]:
        self.reads.append((entity.name, ident))
        await self.gate.wait()
        return self.docs.get((entity.name, ident)), self.position


def _change(projection_ids: list[str], seq: int) -> ChangeMessage:
    return ChangeMessage(1, Position(10, seq), frozenset(projection_ids), frozenset())


async def _settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def _take(sub: Subscription) -> Update | Ending | FellBehind:
    return await asyncio.wait_for(sub.next(), 1)


async def test_limits_per_process_and_per_subject_and_closing_frees_a_place() -> None:
    hub = WatchHub(FakeReader(), WatchLimits(streams=3, per_subject=2, buffer=4))
    a = hub.open(("products", ID), "ann")
    hub.open(("products", ID), "ann")
    with pytest.raises(ResourceExhausted, match="for 'ann'"):
        hub.open(("products", ID), "ann")
    hub.open_feed(None, "")  # no subject: only the process's bound applies
    with pytest.raises(ResourceExhausted, match="at most 3"):
        hub.open(("products", ID), "bob")
    a.close()
    a.close()  # idempotent
    assert hub.open_streams == 2
    hub.open(("products", ID), "bob")


async def test_one_read_per_document_at_a_time_and_a_state_offered_once() -> None:
    reader = FakeReader()
    reader.docs[("products", ID)] = b"v1"
    hub = WatchHub(reader, WatchLimits())
    sub = hub.open(("products", ID), "")
    reader.gate.clear()
    hub.changed("products", _change([ID], 2))
    await _settle()
    for seq in (3, 4):  # two batches while the first read is held
        hub.changed("products", _change([ID], seq))
    await _settle()
    assert len(reader.reads) == 1
    reader.gate.set()
    await _settle()
    assert len(reader.reads) == 2  # the three messages cost two reads
    update = await _take(sub)
    assert isinstance(update, Update) and (update.doc, update.kind) == (b"v1", CHANGE)
    # The second read found the same position: not offered again.
    hub.changed("products", _change([ID], 5))
    await _settle()
    reader.position = Position(11, 1)  # a later batch left the document as it was
    hub.changed("products", _change([ID], 6))
    await _settle()
    reader.docs[("products", ID)] = b"v2"
    reader.position = Position(12, 1)
    hub.changed("products", _change([ID], 7))
    await _settle()
    update = await _take(sub)
    assert isinstance(update, Update) and update.doc == b"v2" and update.position == Position(12, 1)
    # Unwatched documents are never read.
    hub.changed("products", _change(["00000000-0000-4000-8000-000000000002"], 8))
    await _settle()
    assert ("products", "00000000-0000-4000-8000-000000000002") not in reader.reads


async def test_a_full_buffer_is_emptied_and_the_stream_told_it_fell_behind() -> None:
    reader = FakeReader()
    hub = WatchHub(reader, WatchLimits(buffer=2))
    sub = hub.open(("products", ID), "")
    for n in range(4):
        reader.docs[("products", ID)] = b"v%d" % n
        reader.position = Position(20 + n, 1)
        hub.changed("products", _change([ID], n))
        await _settle()
    assert isinstance(await _take(sub), FellBehind)
    reader.docs[("products", ID)] = b"v9"
    reader.position = Position(30, 1)
    hub.changed("products", _change([ID], 9))
    await _settle()
    update = await _take(sub)
    assert isinstance(update, Update) and update.doc == b"v9"


async def test_a_feed_gets_the_orders_of_its_customer_and_a_doubt_rereads_as_resync() -> None:
    reader = FakeReader()
    hub = WatchHub(reader, WatchLimits())
    ann, bob = "00000000-0000-4000-8000-00000000000a", "00000000-0000-4000-8000-00000000000b"
    mine = hub.open_feed(ann, "")
    everything = hub.open_feed(None, "")
    for n, customer in enumerate((bob, ann)):
        order = shop_pb2.Order(id=f"00000000-0000-4000-8000-00000000010{n}", customer_id=customer)
        reader.docs[("orders", order.id)] = order.SerializeToString()
        reader.position = Position(40 + n, 1)
        hub.changed(ORDERS.name, _change([order.id], n))
        await _settle()
    got = await _take(mine)
    assert isinstance(got, Update) and got.ident.endswith("101")
    assert [u.ident[-3:] for u in [await _take(everything), await _take(everything)]] == [  # type: ignore[union-attr]
        "100",
        "101",
    ]
    doc = hub.open((PRODUCTS.name, ID), "")
    reader.docs[("products", ID)] = b"p"
    hub.following(PRODUCTS.name)
    await _settle()
    update = await _take(doc)
    assert isinstance(update, Update) and update.kind == RESYNC


class HeldFor(FakeReader):
    """Reads of ``held`` wait on ``gate``; every other read answers at once."""

    def __init__(self, held: str) -> None:
        super().__init__()
        self.held = held

    async def current(
        self, entity: Entity, ident: str, freshness: Freshness
    ) -> tuple[bytes | None, Position]:
        self.reads.append((entity.name, ident))
        if ident == self.held:
            await self.gate.wait()
        return self.docs.get((entity.name, ident)), self.position


async def test_a_feed_is_never_told_to_resume_past_an_order_not_yet_offered() -> None:
    """Order A changes in one batch, B in the next; A's read is slow, so B is offered first:
    its ``through`` stays where A's part stood before A's change, so a client resuming there
    is sent A. Once A is offered, ``through`` moves up to the lowest checkpoint heard of the
    projection's parts (a spread projection: the shard furthest behind)."""
    a, b = (f"00000000-0000-4000-8000-00000000020{n}" for n in (1, 2))
    reader = HeldFor(a)
    reader.gate.clear()
    for ident in (a, b):
        reader.docs[("orders", ident)] = shop_pb2.Order(id=ident).SerializeToString()
    hub = WatchHub(reader, WatchLimits())
    feed = hub.open_feed(None, "")
    reader.position = Position(10, 3)
    hub.changed(ORDERS.name, _change([a], 2), since=Position(10, 1), through=Position(10, 2))
    hub.changed(ORDERS.name, _change([b], 3), since=Position(10, 2), through=Position(10, 3))
    await _settle()
    first = await _take(feed)
    assert isinstance(first, Update) and first.ident == b and first.position == Position(10, 3)
    assert first.through == Position(10, 1)  # A's change (after 10.1) not offered yet
    reader.gate.set()
    second = await _take(feed)
    assert isinstance(second, Update) and second.ident == a
    assert second.through == Position(10, 3)
    # Another part behind (a shard that has heard only up to 10.2): not past it.
    reader.position = Position(10, 5)
    hub.changed(ORDERS.name, _change([b], 5), since=Position(10, 3), through=Position(10, 2))
    await _settle()
    third = await _take(feed)
    assert isinstance(third, Update) and third.position == Position(10, 5)
    assert third.through == Position(10, 2)
    # A doubt: nothing vouched for until a part is heard again (the feed resyncs).
    hub.following(ORDERS.name)
    reader.position = Position(10, 6)
    hub.changed(ORDERS.name, _change([b], 6))
    await _settle()
    fourth = await _take(feed)
    while not isinstance(fourth, Update):  # the doubt itself
        fourth = await _take(feed)
    assert fourth.through is None
    # A change of unknown start (its part's first message since the doubt), still being
    # read: nothing is vouched for while it is, though the parts are heard again.
    reader.gate.clear()
    reader.position = Position(10, 8)
    hub.changed(ORDERS.name, _change([a], 7), since=None, through=Position(10, 7))
    hub.changed(ORDERS.name, _change([b], 8), since=Position(10, 7), through=Position(10, 8))
    await _settle()
    fifth = await _take(feed)
    assert isinstance(fifth, Update) and fifth.ident == b and fifth.through is None
    reader.gate.set()
    sixth = await _take(feed)
    assert isinstance(sixth, Update) and sixth.ident == a and sixth.through == Position(10, 8)


async def test_shutdown_ends_every_stream_and_refuses_new_ones() -> None:
    hub = WatchHub(FakeReader(), WatchLimits())
    sub = hub.open(("products", ID), "")
    waiting = asyncio.create_task(sub.next())
    await _settle()
    hub.shut_down()
    assert isinstance(await asyncio.wait_for(waiting, 1), Ending)
    with pytest.raises(ResourceExhausted, match="shutting down"):
        hub.open(("products", ID), "")
