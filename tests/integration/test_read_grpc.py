"""QueryService over a real grpc.aio channel: answers, status codes, BadRequest details."""

from __future__ import annotations

import dataclasses
import socket
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status
from prometheus_client import REGISTRY

from common.field_limits import MAX_TEXT
from common.pb.shop.v1 import query_service_pb2 as qs
from common.pb.shop.v1 import query_service_pb2_grpc, shop_pb2
from common.positions import Position, encode_token
from common.settings import Settings
from read_server.bootstrap import App, bootstrap
from read_server.server import SERVICE, create_server
from tests.support.paging import PageGuard
from tests.support.read_fixtures import CHECKPOINT, Loaded, loaded_sources, newest_first

pytestmark = pytest.mark.integration

ALL_SOURCES = (
    qs.SOURCE_UNSPECIFIED,
    qs.SOURCE_PROJECTION,
    qs.SOURCE_READ_MODEL,
    qs.SOURCE_WRITE_MODEL,
)
AHEAD_TOKEN = encode_token(Position(CHECKPOINT.xid + 1, 0))


SERVICE_NAME = SERVICE.full_name


@asynccontextmanager
async def serving(app: App) -> AsyncIterator[grpc.aio.Channel]:
    """The read server on a free port, and a channel to it."""
    built = create_server(app, "127.0.0.1:0")
    await built.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{built.port}") as channel:
            yield channel
    finally:
        await built.server.stop(None)


@dataclasses.dataclass
class Env:
    loaded: Loaded
    channel: grpc.aio.Channel
    stub: Any  # query_service_pb2_grpc.QueryServiceStub (untyped generated code)


@pytest.fixture
async def env(settings: Settings) -> AsyncIterator[Env]:
    async with (
        loaded_sources(settings) as loaded,
        serving(loaded.app) as channel,
    ):
        yield Env(loaded, channel, query_service_pb2_grpc.QueryServiceStub(channel))


async def _rpc_error(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


def _violations(error: grpc.aio.AioRpcError) -> list[str]:
    """The BadRequest field names of an INVALID_ARGUMENT error."""
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(error)
    assert status is not None
    bad_request = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(bad_request)
    return [v.field for v in bad_request.field_violations]


async def test_every_source_answers_the_same_over_grpc(env: Env) -> None:
    ds = env.loaded.ds
    product, customer, order = ds.products[3], ds.customers[1], ds.orders[2]
    expected_orders = newest_first(ds.orders)
    for source in ALL_SOURCES:
        assert await env.stub.GetProduct(qs.GetProductRequest(id=product.id, source=source)) == (
            product
        )
        # Ids are canonicalized: upper case reaches the same document everywhere.
        got = await env.stub.GetCustomer(
            qs.GetCustomerRequest(id=customer.id.upper(), source=source)
        )
        assert got == customer
        assert await env.stub.GetOrder(qs.GetOrderRequest(id=order.id, source=source)) == order

        listed: list[shop_pb2.Order] = []
        token = ""
        guard = PageGuard()
        while True:
            page = await env.stub.ListOrders(
                qs.ListOrdersRequest(page_size=4, page_token=token, source=source)
            )
            listed += page.orders
            if not page.next_page_token:
                break
            token = guard.next(page.next_page_token)
        assert listed == expected_orders

        category = product.category
        products = await env.stub.ListProducts(
            qs.ListProductsRequest(category=category, source=source)
        )
        in_category = [p for p in ds.products if p.category == category]
        assert list(products.products) == newest_first(in_category)
        assert products.next_page_token == ""

        customers = await env.stub.ListCustomers(
            qs.ListCustomersRequest(page_size=2, source=source)
        )
        assert list(customers.customers) == newest_first(ds.customers)[:2]
        assert customers.next_page_token

        by_status = await env.stub.ListOrders(
            qs.ListOrdersRequest(customer_id=order.customer_id, status=order.status, source=source)
        )
        assert list(by_status.orders) == newest_first(
            ds.orders, lambda o: o.customer_id == order.customer_id and o.status == order.status
        )


async def test_deleted_entities_are_not_found(env: Env) -> None:
    ds = env.loaded.ds
    for source in ALL_SOURCES:
        calls = [
            env.stub.GetProduct(qs.GetProductRequest(id=ds.deleted_products[0].id, source=source)),
            env.stub.GetCustomer(
                qs.GetCustomerRequest(id=ds.deleted_customers[0].id, source=source)
            ),
            env.stub.GetOrder(qs.GetOrderRequest(id=ds.deleted_orders[0].id, source=source)),
            env.stub.GetOrder(qs.GetOrderRequest(id=str(uuid.uuid4()), source=source)),
        ]
        for call in calls:
            error = await _rpc_error(call)
            assert error.code() == grpc.StatusCode.NOT_FOUND
            assert "not found" in (error.details() or "")


async def test_invalid_arguments_carry_field_violations(env: Env) -> None:
    stub = env.stub
    some_id = env.loaded.ds.customers[0].id
    cases: list[tuple[Any, list[str]]] = [
        (stub.GetProduct(qs.GetProductRequest(id="not-a-uuid")), ["id"]),
        (stub.GetOrder(qs.GetOrderRequest(id="")), ["id"]),
        (
            stub.ListProducts(qs.ListProductsRequest(page_size=-1, page_token="garbage!")),
            ["page_size", "page_token"],
        ),
        (stub.ListCustomers(qs.ListCustomersRequest(page_size=1001)), ["page_size"]),
        (
            stub.GetCustomer(qs.GetCustomerRequest(id=some_id, consistency_token="c1.zz")),
            ["consistency_token"],
        ),
        (
            stub.ListOrders(qs.ListOrdersRequest(customer_id="42", status=99, source=7)),  # type: ignore[arg-type]
            ["customer_id", "status", "source"],
        ),
    ]
    for call, fields in cases:
        assert _violations(await _rpc_error(call)) == fields


async def test_token_wait_is_bounded_by_settings_and_by_the_deadline(
    env: Env, settings: Settings
) -> None:
    product = env.loaded.ds.products[0]
    request = qs.GetProductRequest(id=product.id, consistency_token=AHEAD_TOKEN)

    # The call's deadline is shorter than consistency_wait_max_ms (5 s): the server
    # answers UNAVAILABLE before the client's DEADLINE_EXCEEDED would fire (it keeps back
    # 0.5 s of the 2 s to reply in, enough on a loaded machine; 0.15 s of 0.5 s was not).
    for source in (qs.SOURCE_PROJECTION, qs.SOURCE_READ_MODEL):
        request.source = source
        error = await _rpc_error(env.stub.GetProduct(request, timeout=2))
        assert error.code() == grpc.StatusCode.UNAVAILABLE
        assert "has not caught up with the consistency token" in (error.details() or "")

    request.source = qs.SOURCE_WRITE_MODEL
    assert await env.stub.GetProduct(request, timeout=0.5) == product

    short = dataclasses.replace(settings, consistency_wait_max_ms=100)
    async with serving(dataclasses.replace(env.loaded.app, settings=short)) as channel:
        stub = query_service_pb2_grpc.QueryServiceStub(channel)
        request.source = qs.SOURCE_READ_MODEL
        error = await _rpc_error(stub.GetProduct(request))
        assert error.code() == grpc.StatusCode.UNAVAILABLE
        assert error.details() == (
            "projection pg:products has not caught up with the consistency token within 100 ms"
        )


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_redis_down_is_unavailable_while_postgres_sources_answer(
    env: Env, settings: Settings
) -> None:
    product = env.loaded.ds.products[0]
    dead = dataclasses.replace(settings, redis_url=f"redis://127.0.0.1:{_closed_port()}/0")
    app = await bootstrap(dead)
    try:
        async with serving(app) as channel:
            stub = query_service_pb2_grpc.QueryServiceStub(channel)
            for source in (qs.SOURCE_UNSPECIFIED, qs.SOURCE_PROJECTION):
                started = time.perf_counter()
                error = await _rpc_error(
                    stub.ListProducts(qs.ListProductsRequest(source=source), timeout=5)
                )
                assert error.code() == grpc.StatusCode.UNAVAILABLE
                assert "Redis" in (error.details() or "")
                assert time.perf_counter() - started < 2.0
            for source in (qs.SOURCE_READ_MODEL, qs.SOURCE_WRITE_MODEL):
                got = await stub.GetProduct(qs.GetProductRequest(id=product.id, source=source))
                assert got == product
    finally:
        await app.close()


async def test_reflection_and_health_list_the_query_service(env: Env) -> None:
    reflection = reflection_pb2_grpc.ServerReflectionStub(env.channel)
    call = reflection.ServerReflectionInfo()
    await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
    response = await call.read()
    await call.done_writing()
    names = {s.name for s in response.list_services_response.service}
    assert SERVICE_NAME == "shop.v1.QueryService"
    assert SERVICE_NAME in names

    health = health_pb2_grpc.HealthStub(env.channel)
    reply = await health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME))
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_postgres_down_is_unavailable_while_redis_answers(
    env: Env, settings: Settings
) -> None:
    product = env.loaded.ds.products[0]
    dead = dataclasses.replace(
        settings, database_url=f"postgresql://postgres@127.0.0.1:{_closed_port()}/nowhere"
    )
    app = await bootstrap(dead)  # starts without PostgreSQL
    try:
        async with serving(app) as channel:
            stub = query_service_pb2_grpc.QueryServiceStub(channel)
            for source in (qs.SOURCE_READ_MODEL, qs.SOURCE_WRITE_MODEL):
                request = qs.GetProductRequest(id=product.id, source=source)
                error = await _rpc_error(stub.GetProduct(request, timeout=5))
                assert error.code() == grpc.StatusCode.UNAVAILABLE
            got = await stub.GetProduct(qs.GetProductRequest(id=product.id))
            assert got == product
    finally:
        await app.close()


def _near_cache_reads() -> dict[str, float]:
    """The products near-cache's reads so far, by outcome (hit, miss, bypass)."""
    return {
        outcome: REGISTRY.get_sample_value(
            "cqrs_near_cache_reads_total", {"projection": "products", "outcome": outcome}
        )
        or 0.0
        for outcome in ("hit", "miss", "bypass")
    }


async def test_an_oversized_category_is_invalid_before_any_cache_or_store(env: Env) -> None:
    """3 MB categories grew a read server by 200 MB through the near-cache's keys: a
    category longer than a stored one could be is refused before anything is read."""
    category = env.loaded.ds.products[0].category
    await env.stub.ListProducts(qs.ListProductsRequest(category=category))  # the cache is live
    before = _near_cache_reads()
    for source in ALL_SOURCES:
        for hostile in ("x" * 3_000_000, "c" * (MAX_TEXT + 1)):
            request = qs.ListProductsRequest(category=hostile, source=source)
            error = await _rpc_error(env.stub.ListProducts(request))
            assert _violations(error) == ["category"]
            assert f"at most {MAX_TEXT} characters" in (error.details() or "")
    assert _near_cache_reads() == before  # not even asked


async def _log_head(settings: Settings) -> int:
    conn = await asyncpg.connect(settings.asyncpg_dsn)
    try:
        head: int = await conn.fetchval(
            "SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint"
        )
        return head
    finally:
        await conn.close()


async def test_a_token_from_the_future_is_invalid_argument_at_once(
    env: Env, settings: Settings
) -> None:
    """A forged token beyond the log's head held a read for the whole consistency wait
    (5 s) and then answered UNAVAILABLE, which alerts count as a server fault."""
    future = encode_token(Position(await _log_head(settings) + 1000, 0))
    product = env.loaded.ds.products[0]
    stub = env.stub
    calls: list[Any] = []
    for source in (qs.SOURCE_PROJECTION, qs.SOURCE_READ_MODEL):
        calls += [
            lambda s=source: stub.GetProduct(
                qs.GetProductRequest(id=product.id, source=s, consistency_token=future)
            ),
            lambda s=source: stub.ListOrders(
                qs.ListOrdersRequest(source=s, consistency_token=future)
            ),
        ]
    calls += [
        lambda: stub.ListTopCustomers(qs.ListTopCustomersRequest(consistency_token=future)),
        lambda: stub.SearchProducts(
            qs.SearchProductsRequest(query="teapot", consistency_token=future)
        ),
        lambda: stub.ListWebhookSubscriptions(
            qs.ListWebhookSubscriptionsRequest(consistency_token=future)
        ),
    ]
    for call in calls:
        started = time.perf_counter()
        error = await _rpc_error(call())
        assert _violations(error) == ["consistency_token"], error.details()
        assert "ahead of the event log" in (error.details() or "")
        assert time.perf_counter() - started < 0.5
    # A token the projection has not reached yet, but a command may have written, waits.
    behind = qs.GetProductRequest(id=product.id, consistency_token=AHEAD_TOKEN)
    error = await _rpc_error(stub.GetProduct(behind, timeout=2))
    assert error.code() == grpc.StatusCode.UNAVAILABLE
