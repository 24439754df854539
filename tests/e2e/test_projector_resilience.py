"""The projector as a real process: SIGKILLed while commands flow, and rebuilt while serving."""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
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
from common.settings import Settings
from tests.support.servers import ROOT, Process, env_for, free_port, start, wait_serving

pytestmark = pytest.mark.e2e


@dataclass
class Servers:
    write: str
    read: str
    env: dict[str, str]
    tmp: Path


@pytest.fixture
def servers(settings: Settings, tmp_path: Path) -> Iterator[Servers]:
    write_port, read_port = free_port(), free_port()
    env = env_for(settings, CQRS_WRITE_PORT=str(write_port), CQRS_READ_PORT=str(read_port))
    write = start(["write-server"], env, tmp_path / "write.log")
    read = start(["read-server"], env, tmp_path / "read.log")
    try:
        wait_serving(f"127.0.0.1:{write_port}", write)
        wait_serving(f"127.0.0.1:{read_port}", read)
        yield Servers(f"127.0.0.1:{write_port}", f"127.0.0.1:{read_port}", env, tmp_path)
    finally:
        assert [write.stop(), read.stop()] == [0, 0], write.log()[-2000:] + read.log()[-2000:]


def cqrs(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cqrs", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


async def _traffic(write: cpb_grpc.CommandServiceStub, stop: asyncio.Event) -> str:
    """Commands of every kind until ``stop``; returns the last consistency token."""
    rng = random.Random(7)
    customer = await write.CreateCustomer(cpb.CreateCustomerRequest(name="C", email="c@x.org"))
    products: list[str] = []
    token = customer.consistency_token
    n = 0
    while not stop.is_set():
        n += 1
        try:
            if not products or rng.random() < 0.3:
                reply = await write.CreateProduct(
                    cpb.CreateProductRequest(
                        name=f"p{n}", price_cents=n, currency="EUR", category=f"c{n % 3}", stock=50
                    )
                )
                products.append(reply.id)
            elif rng.random() < 0.5:
                reply = await write.PlaceOrder(
                    cpb.PlaceOrderRequest(
                        customer_id=customer.id,
                        items=[
                            cpb.PlaceOrderRequest.Item(product_id=p, quantity=1)
                            for p in rng.sample(products, min(3, len(products)))
                        ],
                    )
                )
                if rng.random() < 0.5:
                    reply = await write.CancelOrder(cpb.CancelOrderRequest(id=reply.id))
            elif rng.random() < 0.5:
                reply = await write.UpdateCustomer(
                    cpb.UpdateCustomerRequest(id=customer.id, name=f"C{n}")
                )
            else:
                reply = await write.UpdateProduct(
                    cpb.UpdateProductRequest(id=rng.choice(products), price_cents=n)
                )
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.FAILED_PRECONDITION, exc  # out of stock
            continue
        token = reply.consistency_token
    return token


async def test_sigkilled_projector_loses_and_doubles_nothing(servers: Servers) -> None:
    def projector() -> Process:
        return start(["projector", "run"], servers.env, servers.tmp / "projector.log")

    running = projector()
    stop = asyncio.Event()
    async with grpc.aio.insecure_channel(servers.write) as channel:
        traffic = asyncio.create_task(_traffic(cpb_grpc.CommandServiceStub(channel), stop))
        for _ in range(6):
            await asyncio.sleep(random.uniform(0.4, 1.2))
            running.stop(signal.SIGKILL)
            running = projector()
        stop.set()
        token = await traffic
    try:
        async with grpc.aio.insecure_channel(servers.read) as channel:
            read = qpb_grpc.QueryServiceStub(channel)
            for source in (qpb.SOURCE_PROJECTION, qpb.SOURCE_READ_MODEL):
                await read.ListProducts(
                    qpb.ListProductsRequest(source=source, consistency_token=token), timeout=30
                )
                await read.ListOrders(
                    qpb.ListOrdersRequest(source=source, consistency_token=token), timeout=30
                )
                await read.ListCustomers(
                    qpb.ListCustomersRequest(source=source, consistency_token=token), timeout=30
                )
            await read.ListTopCustomers(  # pg:analytics too
                qpb.ListTopCustomersRequest(consistency_token=token), timeout=30
            )
        verified = cqrs(servers.env, "projector", "verify")
        assert verified.returncode == 0, verified.stdout + verified.stderr
    finally:
        assert running.stop() == 0, running.log()[-3000:]


async def test_rebuild_while_serving_never_shows_a_partial_list(servers: Servers) -> None:
    seeded = cqrs(
        servers.env, "seed", "--products", "600", "--customers", "60", "--orders-per-customer", "2"
    )
    assert seeded.returncode == 0, seeded.stderr
    running = start(["projector", "run"], servers.env, servers.tmp / "projector.log")
    try:
        async with grpc.aio.insecure_channel(servers.read) as channel:
            read = qpb_grpc.QueryServiceStub(channel)

            async def full_list(source: int) -> list[str]:
                request = qpb.ListProductsRequest(source=source, page_size=1000)
                reply = await read.ListProducts(request, timeout=30)
                assert not reply.next_page_token
                return [p.id for p in reply.products]

            async def orders(source: int) -> int:
                reply = await read.ListOrders(
                    qpb.ListOrdersRequest(source=source, page_size=1000), timeout=30
                )
                return len(reply.orders)

            expected = await full_list(qpb.SOURCE_WRITE_MODEL)
            assert len(expected) == 600
            # Wait for the live projector to catch up with the seed.
            for _ in range(300):
                try:
                    if await full_list(qpb.SOURCE_PROJECTION) == expected and (
                        await full_list(qpb.SOURCE_READ_MODEL) == expected
                    ):
                        break
                except grpc.aio.AioRpcError:
                    pass
                await asyncio.sleep(0.1)

            rebuild = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "cqrs", "projector", "rebuild",
                env=servers.env, cwd=ROOT,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            reads = 0
            while rebuild.returncode is None:
                for source in (qpb.SOURCE_PROJECTION, qpb.SOURCE_READ_MODEL):
                    assert await full_list(source) == expected
                    assert await orders(source) == 120
                    reads += 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(rebuild.wait(), 0.01)
            out, err = await rebuild.communicate()
            assert rebuild.returncode == 0, (out + err).decode()
            assert reads >= 2
            for source in (qpb.SOURCE_PROJECTION, qpb.SOURCE_READ_MODEL):
                assert await full_list(source) == expected
    finally:
        assert running.stop() == 0, running.log()[-3000:]
    verified = cqrs(servers.env, "projector", "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
