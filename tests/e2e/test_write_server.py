"""A real ``cqrs write-server`` process, called over gRPC and through grpcurl."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

import asyncpg
import grpc
import pytest

from common.pb.shop.v1 import command_service_pb2 as pb
from common.pb.shop.v1 import command_service_pb2_grpc as pb_grpc
from common.settings import Settings
from tests.support.env import settings_for, unique_name
from tests.support.servers import (
    env_for,
    field_violations,
    free_port,
    grpcurl,
    start,
    wait_serving,
)

pytestmark = pytest.mark.e2e


async def test_create_product_customer_order_over_grpc(
    write_server: str, settings: Settings
) -> None:
    async with grpc.aio.insecure_channel(write_server) as channel:
        stub = pb_grpc.CommandServiceStub(channel)
        product = await stub.CreateProduct(
            pb.CreateProductRequest(name="Mug", price_cents=1250, currency="EUR", stock=3)
        )
        customer = await stub.CreateCustomer(
            pb.CreateCustomerRequest(name="Ann", email="ann@example.org")
        )
        order = await stub.PlaceOrder(
            pb.PlaceOrderRequest(
                customer_id=customer.id,
                items=[pb.PlaceOrderRequest.Item(product_id=product.id, quantity=2)],
                request_id="order-1",
            ),
            metadata=[("x-test", "1")],
        )
        assert order.version == 1 and order.consistency_token
        retry = await stub.PlaceOrder(
            pb.PlaceOrderRequest(
                customer_id=customer.id,
                items=[pb.PlaceOrderRequest.Item(product_id=product.id, quantity=2)],
                request_id="order-1",
            )
        )
        assert retry == order
        updated = await stub.UpdateProduct(
            pb.UpdateProductRequest(id=product.id, price_cents=1500, expected_version=2)
        )
        assert updated.version == 3
    conn = await asyncpg.connect(settings.asyncpg_dsn)
    try:
        rows = await conn.fetch("SELECT event_type, metadata FROM events ORDER BY seq")
        stock = await conn.fetchval("SELECT stock FROM products WHERE id = $1", product.id)
    finally:
        await conn.close()
    assert [r["event_type"] for r in rows] == [
        "ProductCreated",
        "CustomerCreated",
        "ProductStockReserved",
        "OrderPlaced",
        "ProductUpdated",
    ]
    metadata = json.loads(rows[3]["metadata"])
    assert metadata["request_id"] == "order-1"
    assert metadata["peer"].startswith("ipv4:127.0.0.1")
    assert "grpc-python" in metadata["user_agent"]
    assert stock == 1


async def test_errors_map_to_grpc_statuses(write_server: str) -> None:
    async with grpc.aio.insecure_channel(write_server) as channel:
        stub = pb_grpc.CommandServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as bad:
            await stub.CreateProduct(pb.CreateProductRequest(name="", price_cents=-5, currency="X"))
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert set(field_violations(bad.value)) == {"name", "price_cents", "currency"}

        missing = "01a1ffba-0000-7000-8000-000000000000"
        with pytest.raises(grpc.aio.AioRpcError) as not_found:
            await stub.ShipOrder(pb.ShipOrderRequest(id=missing))
        assert not_found.value.code() == grpc.StatusCode.NOT_FOUND

        await stub.CreateCustomer(pb.CreateCustomerRequest(name="A", email="a@example.org"))
        with pytest.raises(grpc.aio.AioRpcError) as exists:
            await stub.CreateCustomer(pb.CreateCustomerRequest(name="B", email="A@example.org"))
        assert exists.value.code() == grpc.StatusCode.ALREADY_EXISTS

        product = await stub.CreateProduct(
            pb.CreateProductRequest(name="P", price_cents=1, currency="EUR", stock=1)
        )
        with pytest.raises(grpc.aio.AioRpcError) as stale:
            await stub.DeleteProduct(pb.DeleteProductRequest(id=product.id, expected_version=7))
        assert stale.value.code() == grpc.StatusCode.ABORTED
        assert "version 1" in (stale.value.details() or "")

        customer = await stub.CreateCustomer(pb.CreateCustomerRequest(name="C", email="c@x.org"))
        with pytest.raises(grpc.aio.AioRpcError) as short:
            await stub.PlaceOrder(
                pb.PlaceOrderRequest(
                    customer_id=customer.id,
                    items=[pb.PlaceOrderRequest.Item(product_id=product.id, quantity=5)],
                )
            )
        assert short.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        # The server is still serving after every kind of error.
        assert (await stub.DeleteProduct(pb.DeleteProductRequest(id=product.id))).version == 2


async def test_concurrent_orders_sell_exactly_the_stock(
    write_server: str, settings: Settings
) -> None:
    attempts, stock = 20, 7
    async with grpc.aio.insecure_channel(write_server) as channel:
        stub = pb_grpc.CommandServiceStub(channel)
        product = await stub.CreateProduct(
            pb.CreateProductRequest(name="Hot", price_cents=100, currency="EUR", stock=stock)
        )
        customer = await stub.CreateCustomer(pb.CreateCustomerRequest(name="C", email="c@x.org"))
        request = pb.PlaceOrderRequest(
            customer_id=customer.id,
            items=[pb.PlaceOrderRequest.Item(product_id=product.id, quantity=1)],
        )
        results = await asyncio.gather(
            *(stub.PlaceOrder(request) for _ in range(attempts)), return_exceptions=True
        )
    ok = [r for r in results if isinstance(r, pb.CommandReply)]
    codes = [r.code() for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(ok) == stock
    assert codes == [grpc.StatusCode.FAILED_PRECONDITION] * (attempts - stock)
    conn = await asyncpg.connect(settings.asyncpg_dsn)
    try:
        left = await conn.fetchval("SELECT stock FROM products WHERE id = $1", product.id)
        per_tx = await conn.fetch(
            """SELECT array_agg(event_type ORDER BY seq) AS types FROM events
               WHERE event_type IN ('ProductStockReserved', 'OrderPlaced') GROUP BY xid"""
        )
        placed = await conn.fetch(
            "SELECT aggregate_id::text AS id FROM events WHERE event_type = 'OrderPlaced'"
        )
    finally:
        await conn.close()
    assert left == 0
    assert [list(r["types"]) for r in per_tx] == [["ProductStockReserved", "OrderPlaced"]] * stock
    assert {r["id"] for r in placed} == {r.id for r in ok}


def test_grpcurl_lists_services_and_calls_through_reflection(write_server: str) -> None:
    listed = subprocess.run(
        [grpcurl(), "-plaintext", write_server, "list"], capture_output=True, text=True, timeout=30
    )
    assert listed.returncode == 0, listed.stderr
    assert "shop.v1.CommandService" in listed.stdout.split()
    assert "grpc.health.v1.Health" in listed.stdout.split()

    body = json.dumps({"name": "Kettle", "priceCents": "2999", "currency": "GBP", "stock": 4})
    created = subprocess.run(
        [grpcurl(), "-plaintext", "-d", body, write_server, "shop.v1.CommandService/CreateProduct"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert created.returncode == 0, created.stderr
    reply = json.loads(created.stdout)
    assert reply["version"] == "1" and reply["consistency_token"]

    bad = subprocess.run(
        [
            grpcurl(),
            "-plaintext",
            "-d",
            '{"name": ""}',
            write_server,
            "shop.v1.CommandService/CreateProduct",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert bad.returncode != 0
    assert "Code: InvalidArgument" in bad.stdout + bad.stderr


def test_database_down_gives_unavailable_and_server_stays_up(tmp_path: Path) -> None:
    dead = settings_for(unique_name("nodb"), unique_name("r"))
    dead_url = f"postgresql://postgres@127.0.0.1:{free_port()}/nothing"
    port = free_port()
    env = env_for(dead, CQRS_DATABASE_URL=dead_url)
    process = start(["write-server", "--port", str(port)], env, tmp_path / "w.log")
    address = f"127.0.0.1:{port}"
    try:
        wait_serving(address, process)
        with grpc.insecure_channel(address) as channel:
            stub = pb_grpc.CommandServiceStub(channel)
            for _ in range(2):
                with pytest.raises(grpc.RpcError) as info:
                    stub.CreateProduct(
                        pb.CreateProductRequest(name="x", price_cents=1, currency="EUR"),
                        timeout=20,
                    )
                assert info.value.code() == grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]
                assert "Traceback" not in (info.value.details() or "")  # type: ignore[attr-defined]
        assert process.proc.poll() is None
    finally:
        assert process.stop() == 0, process.log()
