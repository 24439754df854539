"""An orders feed in memory (read_server/watch/streams.py): a state a resync from the
event log sent is not sent again when the hub offers it later (hand-written fakes stand
in for Redis and the event log)."""

from __future__ import annotations

from typing import Any, cast

from common.entities import Entity
from common.positions import Position
from read_server.sources.base import Freshness
from read_server.watch.streams import Watching, _Feed

ORDER = "00000000-0000-4000-8000-0000000000aa"


class FakeProjection:
    """The orders projection: the lowest checkpoint of its shards, and each order's
    state with the checkpoint of the shard it lives on (ahead of the lowest)."""

    def __init__(self, lowest: Position) -> None:
        self.lowest = lowest
        self.docs: dict[str, tuple[bytes, Position]] = {}

    async def checkpoint_at_least(self, entity: Entity, freshness: Freshness) -> Position:
        return self.lowest

    async def current(
        self, entity: Entity, ident: str, freshness: Freshness
    ) -> tuple[bytes | None, Position]:
        return self.docs[ident]


class FakeGaps:
    """The event log: the orders changed in a gap, with their commits and newest event."""

    def __init__(self) -> None:
        self.changed: dict[str, tuple[int, Position]] = {}

    async def changed_orders(
        self, customer: str | None, after: Position, upto: Position
    ) -> dict[str, tuple[int, Position]] | None:
        return self.changed


async def test_a_state_a_resync_sent_is_not_sent_again_when_the_hub_offers_it_later() -> None:
    # A spread projection: shards at 20 and 30; the order lives on the shard at 30.
    projection, gaps = FakeProjection(lowest=Position(20, 0)), FakeGaps()
    confirmed = b"order v2, confirmed"
    projection.docs[ORDER] = (confirmed, Position(30, 0))
    gaps.changed[ORDER] = (1, Position(15, 0))
    feed = _Feed(Watching(cast(Any, None), cast(Any, projection), cast(Any, gaps)), None)

    sent = [m async for m in feed.gap(Position(10, 0))]
    assert len(sent) == 1 and confirmed in sent[0]
    assert feed.synced == Position(20, 0)
    # The hub read the order again once its shard had moved on (another batch there).
    assert not feed.fresh(ORDER, Position(31, 0), confirmed)
    assert not feed.fresh(ORDER, Position(32, 0), confirmed)  # and again
    # A new state is news.
    assert feed.fresh(ORDER, Position(33, 0), b"order v3, paid")
    # The next resync forgets what the last one sent.
    projection.lowest = Position(40, 0)
    assert [m async for m in feed.gap(Position(20, 0))] == []  # nothing changed: sent
    assert feed.fresh(ORDER, Position(41, 0), confirmed)  # forgotten with that resync


async def test_a_later_state_offered_before_the_resync_read_is_still_sent() -> None:
    projection, gaps = FakeProjection(lowest=Position(20, 0)), FakeGaps()
    feed = _Feed(Watching(cast(Any, None), cast(Any, projection), cast(Any, gaps)), None)
    assert [m async for m in feed.gap(Position(10, 0))] == []  # nothing changed
    assert feed.fresh(ORDER, Position(21, 0), b"order v1")
    assert not feed.fresh(ORDER, Position(20, 0), b"order v0")  # at or below the sync
