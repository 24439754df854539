"""What one history or time-travel call may cost the read server, on real PostgreSQL
over a real grpc.aio channel: history pages end at a byte bound (a page of large events
passed a default client's 4 MB limit), a replay folds at most so many events
(FAILED_PRECONDITION beyond), and replays take turns (each holds a database connection
in a transaction), a call that gets no turn in time being RESOURCE_EXHAUSTED."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import grpc
import pytest

from common import events as ev
from common.documents import timestamp
from common.pb.shop.v1 import history_pb2 as hpb
from common.pb.shop.v1 import query_service_pb2 as qs
from common.pb.shop.v1 import query_service_pb2_grpc
from common.settings import Settings
from read_server.bootstrap import bootstrap
from tests.integration.test_read_grpc import serving

pytestmark = pytest.mark.integration

T0 = datetime(2026, 1, 1, tzinfo=UTC)
DEFAULT_CLIENT_LIMIT = 4 * 1024 * 1024
PRODUCT = {
    "name": "p",
    "description": "",
    "price_cents": 100,
    "currency": "EUR",
    "category": "c",
    "stock": 10**6,
}
COLUMNS = ["aggregate_type", "aggregate_id", "aggregate_version", "event_type", "payload",
           "occurred_at", "schema_version"]  # fmt: skip


async def append_product(settings: Settings, later: list[tuple[str, dict[str, Any]]]) -> str:
    """A product created at T0 and then ``later`` events (type, payload), one a second."""
    ident = uuid.uuid4()
    rows = [("Product", ident, 1, ev.PRODUCT_CREATED, json.dumps(PRODUCT), T0, 1)]
    for n, (event_type, payload) in enumerate(later, start=2):
        rows.append(
            ("Product", ident, n, event_type, json.dumps(payload), T0 + timedelta(seconds=n), 1)
        )
    conn = await asyncpg.connect(settings.asyncpg_dsn)
    try:
        await conn.copy_records_to_table("events", records=rows, columns=COLUMNS)
    finally:
        await conn.close()
    return str(ident)


def stock_events(count: int) -> list[tuple[str, dict[str, Any]]]:
    order = str(uuid.uuid4())
    return [
        (ev.PRODUCT_STOCK_RESERVED, {"order_id": order, "quantity": 1, "stock": 10**6 - n})
        for n in range(count)
    ]


@dataclasses.dataclass
class Reader:
    stub: Any  # QueryServiceStub
    settings: Settings


@pytest.fixture
async def reader(settings: Settings, request: pytest.FixtureRequest) -> AsyncIterator[Reader]:
    """An in-process read server; ``@pytest.mark.parametrize("reader", [{...}], indirect=True)``
    overrides settings."""
    tuned = dataclasses.replace(settings, **getattr(request, "param", {}))
    app = await bootstrap(tuned)
    try:
        async with serving(app) as channel:
            yield Reader(query_service_pb2_grpc.QueryServiceStub(channel), tuned)
    finally:
        await app.close()


async def rpc_error(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


# -- history pages ------------------------------------------------------------------------


async def test_a_history_page_of_large_events_stays_under_its_byte_bound(reader: Reader) -> None:
    """200 updates of a 5,000-character description (15 kB in UTF-8, twice in each event:
    JSON and typed): 6 MB of history. One page of up to 1,000 events passed the 4 MB a
    client receives by default (RESOURCE_EXHAUSTED); now pages end at 1 MiB."""
    updates = [
        (ev.PRODUCT_UPDATED, {"changes": {"description": chr(0x2600 + n % 200) * 5000}})
        for n in range(200)
    ]
    ident = await append_product(reader.settings, updates)
    versions: list[int] = []
    token, pages = "", 0
    while True:
        page = await reader.stub.GetAggregateHistory(
            qs.GetAggregateHistoryRequest(
                aggregate_type=hpb.AGGREGATE_TYPE_PRODUCT,
                aggregate_id=ident,
                page_size=1000,
                page_token=token,
            )
        )
        pages += 1
        assert page.ByteSize() <= 1024 * 1024 < DEFAULT_CLIENT_LIMIT
        versions += [e.version for e in page.events]
        token = page.next_page_token
        if not token:
            break
    assert versions == list(range(1, 202))
    assert pages >= 6
    # The count still bounds a page, and small pages are unchanged.
    first = await reader.stub.GetAggregateHistory(
        qs.GetAggregateHistoryRequest(
            aggregate_type=hpb.AGGREGATE_TYPE_PRODUCT, aggregate_id=ident, page_size=3
        )
    )
    assert [e.version for e in first.events] == [1, 2, 3] and first.next_page_token


# -- time travel ----------------------------------------------------------------------------


def as_of_request(ident: str, at: datetime) -> qs.GetProductAsOfRequest:
    return qs.GetProductAsOfRequest(id=ident, as_of=timestamp(at))


@pytest.mark.parametrize("reader", [{"as_of_max_events": 100}], indirect=True)
async def test_a_replay_folds_at_most_its_bound_of_events(reader: Reader) -> None:
    ident = await append_product(reader.settings, stock_events(149))  # 150 events
    # Up to the 100th event (version 100 occurred at T0 + 100 s): replayed.
    product = await reader.stub.GetProductAsOf(
        as_of_request(ident, T0 + timedelta(seconds=100, milliseconds=500))
    )
    assert product.version == 100 and product.stock == 10**6 - 98
    started = time.perf_counter()
    error = await rpc_error(reader.stub.GetProductAsOf(as_of_request(ident, T0 + timedelta(1))))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "has more than 100 events" in (error.details() or "")
    assert time.perf_counter() - started < 2.0


async def _busy_sessions(conn: asyncpg.Connection, database: str) -> int:
    """The read server's sessions that are running a statement or are in a transaction
    (but its background read of the parked documents, once a second: read_server.parked)."""
    busy: int = await conn.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = $1"
        " AND application_name = 'cqrs-read-server'"
        " AND state IN ('active', 'idle in transaction')"
        " AND query NOT LIKE '%read.parked_aggregates%'",
        database,
    )
    return busy


# A long wait for a turn: on a loaded machine eight replays may take a while.
@pytest.mark.parametrize(
    "reader", [{"as_of_concurrency": 1, "consistency_wait_max_ms": 60_000}], indirect=True
)
async def test_replays_take_turns(reader: Reader) -> None:
    """8 concurrent as-of calls on a 20,000-event product (the issue's case) hold one
    database connection at a time, not eight, and all answer."""
    ident = await append_product(reader.settings, stock_events(19_999))
    request = as_of_request(ident, T0 + timedelta(days=1))
    conn = await asyncpg.connect(reader.settings.asyncpg_dsn)
    database = reader.settings.asyncpg_dsn.rsplit("/", 1)[1]
    most = 0
    try:
        calls = asyncio.gather(*(reader.stub.GetProductAsOf(request) for _ in range(8)))
        while not calls.done():
            most = max(most, await _busy_sessions(conn, database))
            await asyncio.sleep(0.005)
        replies = await calls
    finally:
        await conn.close()
    assert {r.version for r in replies} == {20_000}
    assert most == 1, f"{most} replays held a connection at once"


@pytest.mark.parametrize(
    "reader", [{"as_of_concurrency": 1, "consistency_wait_max_ms": 100}], indirect=True
)
async def test_a_replay_that_gets_no_turn_in_time_is_resource_exhausted(reader: Reader) -> None:
    ident = await append_product(reader.settings, stock_events(19_999))
    request = as_of_request(ident, T0 + timedelta(days=1))
    outcomes = await asyncio.gather(
        *(reader.stub.GetProductAsOf(request) for _ in range(6)), return_exceptions=True
    )
    codes = [
        o.code() if isinstance(o, grpc.aio.AioRpcError) else grpc.StatusCode.OK for o in outcomes
    ]
    assert grpc.StatusCode.OK in codes
    assert set(codes) == {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}, codes
    refused = next(o for o in outcomes if isinstance(o, grpc.aio.AioRpcError))
    assert "retry later" in (refused.details() or "")
