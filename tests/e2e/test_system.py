"""The whole system as separate processes: write server, projector, read server.

A command on the write server becomes visible on the read server through the
projector, identically from all three sources; a consistency token makes the
very next read see the write.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from common.pb.shop.v1 import command_service_pb2 as cpb
from common.pb.shop.v1 import command_service_pb2_grpc as cpb_grpc
from common.pb.shop.v1 import query_service_pb2 as qpb
from common.pb.shop.v1 import query_service_pb2_grpc as qpb_grpc
from common.pb.shop.v1 import shop_pb2
from common.redis_client import redis_client
from common.redis_keys import ProjectionKeys
from common.settings import Settings
from tests.support.servers import ROOT, Process, env_for, free_port, start, wait_serving

pytestmark = pytest.mark.e2e

SOURCES = (qpb.SOURCE_PROJECTION, qpb.SOURCE_READ_MODEL, qpb.SOURCE_WRITE_MODEL)


@dataclass
class System:
    write: str
    read: str
    projector: Process
    env: dict[str, str]


@pytest.fixture
def system(settings: Settings, tmp_path: Path) -> Iterator[System]:
    write_port, read_port = free_port(), free_port()
    env = env_for(settings, CQRS_WRITE_PORT=str(write_port), CQRS_READ_PORT=str(read_port))
    processes = [
        start(["write-server"], env, tmp_path / "write.log"),
        start(["projector", "run"], env, tmp_path / "projector.log"),
        start(["read-server"], env, tmp_path / "read.log"),
    ]
    try:
        wait_serving(f"127.0.0.1:{write_port}", processes[0])
        wait_serving(f"127.0.0.1:{read_port}", processes[2])
        yield System(f"127.0.0.1:{write_port}", f"127.0.0.1:{read_port}", processes[1], env)
    finally:
        codes = [p.stop() for p in processes]
    assert codes == [0, 0, 0], "\n".join(p.log()[-3000:] for p in processes)


async def test_write_becomes_visible_identically_from_every_source(system: System) -> None:
    async with (
        grpc.aio.insecure_channel(system.write) as wch,
        grpc.aio.insecure_channel(system.read) as rch,
    ):
        write = cpb_grpc.CommandServiceStub(wch)
        read = qpb_grpc.QueryServiceStub(rch)
        product = await write.CreateProduct(
            cpb.CreateProductRequest(
                name="Espresso cup",
                description="90 ml",
                price_cents=1250,
                currency="EUR",
                category="kitchen",
                stock=25,
            )
        )
        customer = await write.CreateCustomer(
            cpb.CreateCustomerRequest(name="Ann", email="ann@example.org", city="Glasgow")
        )
        order = await write.PlaceOrder(
            cpb.PlaceOrderRequest(
                customer_id=customer.id,
                items=[cpb.PlaceOrderRequest.Item(product_id=product.id, quantity=2)],
            )
        )
        token = order.consistency_token

        products = [
            await read.GetProduct(
                qpb.GetProductRequest(id=product.id, source=s, consistency_token=token),
                timeout=10,
            )
            for s in SOURCES
        ]
        customers = [
            await read.GetCustomer(
                qpb.GetCustomerRequest(id=customer.id, source=s, consistency_token=token),
                timeout=10,
            )
            for s in SOURCES
        ]
        orders = [
            await read.GetOrder(
                qpb.GetOrderRequest(id=order.id, source=s, consistency_token=token), timeout=10
            )
            for s in SOURCES
        ]
        listed = [
            await read.ListOrders(
                qpb.ListOrdersRequest(customer_id=customer.id, source=s, consistency_token=token),
                timeout=10,
            )
            for s in SOURCES
        ]

    assert products[0] == products[1] == products[2]
    assert products[0].stock == 23 and products[0].version == 2
    assert customers[0] == customers[1] == customers[2]
    assert orders[0] == orders[1] == orders[2]
    placed = orders[0]
    assert placed.status == shop_pb2.ORDER_STATUS_PENDING
    assert placed.customer_name == "Ann" and placed.customer_email == "ann@example.org"
    assert [(i.product_id, i.quantity, i.unit_price_cents) for i in placed.items] == [
        (product.id, 2, 1250)
    ]
    assert placed.total_cents == 2500
    assert listed[0] == listed[1] == listed[2]
    assert [o.id for o in listed[0].orders] == [order.id]


async def test_consistency_token_makes_the_next_read_see_the_write(system: System) -> None:
    async with (
        grpc.aio.insecure_channel(system.write) as wch,
        grpc.aio.insecure_channel(system.read) as rch,
    ):
        write = cpb_grpc.CommandServiceStub(wch)
        read = qpb_grpc.QueryServiceStub(rch)
        created = await write.CreateProduct(
            cpb.CreateProductRequest(name="v1", price_cents=1, currency="EUR")
        )
        for n in range(2, 12):
            reply = await write.UpdateProduct(
                cpb.UpdateProductRequest(id=created.id, name=f"v{n}", expected_version=n - 1)
            )
            for source in (qpb.SOURCE_PROJECTION, qpb.SOURCE_READ_MODEL):
                seen = await read.GetProduct(
                    qpb.GetProductRequest(
                        id=created.id, source=source, consistency_token=reply.consistency_token
                    ),
                    timeout=10,
                )
                assert (seen.name, seen.version) == (f"v{n}", n)


async def test_prune_redis_deletes_what_the_running_system_does_not_use(
    system: System, settings: Settings
) -> None:
    """Keys of layout 1 (a key per document) and of a spread this system does not run are
    listed, then deleted with --delete; the system's own keyspaces serve on."""
    prefix = settings.redis_prefix
    stale_shard = ProjectionKeys(prefix, "orders", (1, 2))
    client = redis_client(settings.redis_url, max_connections=2)
    try:
        await client.set(f"{prefix}:{{products}}:active", 1)
        await client.set(f"{prefix}:{{products}}:g1:doc:gone", b"old")
        await client.set(stale_shard.active, 1)

        def prune(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-m", "cqrs", "projector", "prune-redis", *args],
                env=system.env, cwd=ROOT, capture_output=True, text=True, timeout=60,
            )  # fmt: skip

        listed = prune()
        assert listed.returncode == 0, listed.stderr
        assert f"{prefix}:{{products}}: 2 keys, unused" in listed.stdout
        assert f"{stale_shard.base}: 1 keys, unused" in listed.stdout
        assert await client.exists(f"{prefix}:{{products}}:active") == 1

        deleted = prune("--delete")
        assert deleted.returncode == 0, deleted.stderr
        assert f"{prefix}:{{products}}: 2 keys deleted" in deleted.stdout
        assert await client.exists(f"{prefix}:{{products}}:active", stale_shard.active) == 0
        assert prune().stdout == "no unused Redis keyspaces\n"
    finally:
        await client.aclose()
    async with (
        grpc.aio.insecure_channel(system.write) as wch,
        grpc.aio.insecure_channel(system.read) as rch,
    ):
        created = await cpb_grpc.CommandServiceStub(wch).CreateProduct(
            cpb.CreateProductRequest(name="after the prune", price_cents=1, currency="EUR")
        )
        seen = await qpb_grpc.QueryServiceStub(rch).GetProduct(
            qpb.GetProductRequest(
                id=created.id,
                source=qpb.SOURCE_PROJECTION,
                consistency_token=created.consistency_token,
            ),
            timeout=10,
        )
        assert seen.name == "after the prune"
