"""What an outsider can make the read server hold, bounded before anything is read:
read fields as long as the write side allows at most, tokens from the future refused
on the slow path only, replays taking turns, and the gRPC limits as core options."""

from __future__ import annotations

import asyncio
import resource
import time
import uuid
from collections.abc import Iterator

import pytest

from common.errors import InvalidArgument, ResourceExhausted
from common.field_limits import MAX_TEXT
from common.pb.shop.v1 import query_service_pb2 as qs
from common.positions import Position
from common.rpc.limits import RESERVED_DESCRIPTORS, ServerLimits, connection_cap
from common.settings import Settings
from read_server.history.limits import HistoryLimits
from read_server.requests import RequestParser
from read_server.servicer import QueryServicer
from read_server.sources.base import Freshness, SourceSet
from read_server.sources.head import ahead_of_the_log
from read_server.sources.waiting import BEHIND, CheckpointWatch, Pending
from tests.support.read_fixtures import FakeContext, FakeSource

SOURCES = (qs.SOURCE_PROJECTION, qs.SOURCE_READ_MODEL, qs.SOURCE_WRITE_MODEL)


def _fields(parser: RequestParser) -> dict[str, str]:
    with pytest.raises(InvalidArgument) as caught:
        parser.done()
    return {v.field: v.description for v in caught.value.violations}


# -- read fields --------------------------------------------------------------------------


def test_a_category_is_at_most_as_long_as_a_stored_one() -> None:
    p = RequestParser()
    assert p.text("c" * MAX_TEXT, "category") == "c" * MAX_TEXT
    assert p.text("☃" * MAX_TEXT, "category") == "☃" * MAX_TEXT  # characters, not bytes
    p.done()
    for bad, why in (
        ("c" * (MAX_TEXT + 1), f"must be at most {MAX_TEXT} characters"),
        ("x" * 3_000_000, f"must be at most {MAX_TEXT} characters"),
        ("a\x00b", "must not contain NUL characters (U+0000)"),
    ):
        p = RequestParser()
        p.text(bad, "category")
        assert _fields(p) == {"category": why}


def test_an_id_is_a_uuid_in_a_bounded_spelling() -> None:
    ident = str(uuid.uuid4())
    p = RequestParser()
    assert p.entity_id("urn:uuid:" + ident.upper()) == ident  # the longest spelling
    p.done()
    # uuid.UUID itself would accept this (it drops every hyphen).
    p = RequestParser()
    p.entity_id("-" * 100_000 + ident.replace("-", ""))
    assert _fields(p) == {"id": "must be a UUID"}


@pytest.mark.parametrize("source", SOURCES, ids=qs.Source.Name)
async def test_an_oversized_category_never_reaches_a_source(source: int) -> None:
    sources = FakeSource(), FakeSource(), FakeSource()
    servicer = QueryServicer(SourceSet(*sources), 1.0)
    request = qs.ListProductsRequest(category="x" * 3_000_000, source=source)
    with pytest.raises(InvalidArgument) as caught:
        await servicer.ListProducts(request, FakeContext())
    assert [v.field for v in caught.value.violations] == ["category"]
    assert [s.calls for s in sources] == [[], [], []]


# -- tokens from the future ---------------------------------------------------------------


class Head:
    """A log head a test sets, counting how often it was asked (as LogHead.check)."""

    def __init__(self, xmax: int) -> None:
        self.xmax = xmax
        self.asked = 0

    async def check(self, position: Position) -> None:
        self.asked += 1
        if position.xid >= self.xmax:
            raise ahead_of_the_log()


async def test_a_token_already_reached_never_asks_the_head() -> None:
    head = Head(xmax=100)
    watch = CheckpointWatch(lambda name: _at(Position(50, 0)), head.check)

    async def fresh() -> str | Pending:
        return "ok"

    assert await watch.until_fresh("p", Freshness(Position(40, 1), 1.0), fresh) == "ok"
    assert head.asked == 0


async def test_a_token_from_the_future_is_refused_before_any_wait() -> None:
    head = Head(xmax=100)
    watch = CheckpointWatch(lambda name: _at(Position(50, 0)), head.check)

    async def behind() -> str | Pending:
        return BEHIND

    started = time.monotonic()
    with pytest.raises(InvalidArgument) as caught:
        await watch.until_fresh("p", Freshness(Position(100, 0), 5.0), behind)
    assert time.monotonic() - started < 0.5
    assert [v.field for v in caught.value.violations] == ["consistency_token"]
    assert head.asked == 1


async def _at(position: Position) -> Position | None:
    return position


# -- replays take turns --------------------------------------------------------------------


async def test_replays_take_turns_and_a_call_that_gets_none_is_resource_exhausted() -> None:
    limits = HistoryLimits(as_of_concurrency=1)
    running: list[int] = []
    most = 0

    async def replay(n: int, wait_s: float) -> int:
        nonlocal most
        async with limits.replay_turn(wait_s):
            running.append(n)
            most = max(most, len(running))
            await asyncio.sleep(0.05)
            running.remove(n)
        return n

    assert await asyncio.gather(*(replay(n, 5.0) for n in range(4))) == [0, 1, 2, 3]
    assert most == 1
    holder = asyncio.create_task(replay(9, 5.0))
    await asyncio.sleep(0.01)
    with pytest.raises(ResourceExhausted, match="at most 1 at once"):
        await replay(10, 0.01)
    await holder


# -- the gRPC limits ----------------------------------------------------------------------


def test_server_limits_become_grpc_options_and_zero_turns_one_off() -> None:
    limits = ServerLimits.from_settings(Settings())
    assert dict(limits.grpc_options()) == {
        "grpc.max_concurrent_streams": 250,
        "grpc.max_allowed_incoming_connections": 10000,
        "grpc.max_connection_idle_ms": 300_000,
        "grpc.server_handshake_timeout_ms": 10_000,
        "grpc.max_connection_age_ms": 1_800_000,
        "grpc.max_connection_age_grace_ms": 30_000,
    }
    off = ServerLimits(connection_idle_ms=0, connection_age_ms=0)
    names = {name for name, _ in off.grpc_options()}
    assert "grpc.max_connection_idle_ms" not in names
    assert "grpc.max_connection_age_ms" not in names
    assert "grpc.max_connection_age_grace_ms" not in names


@pytest.fixture
def descriptor_limit() -> Iterator[int]:
    """The soft descriptor limit lowered to 1000 for the test."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (1000, hard))
    try:
        yield 1000
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_connections_never_take_the_descriptors_the_process_needs(descriptor_limit: int) -> None:
    room = descriptor_limit - RESERVED_DESCRIPTORS
    assert connection_cap(10_000) == room
    assert connection_cap(0) == room
    assert connection_cap(50) == 50
