"""What outsiders can make a real server process hold, bounded (``common.rpc.limits``):

- connections: raw TCP connections that never speak HTTP/2 are closed after the
  handshake time, connections past the cap are closed at once, idle ones after the idle
  time; the process's descriptors stay bounded and a real call then succeeds (20,500
  idle connections had exhausted 20,000 descriptors and a real call failed);
- connection age: a stream older than age + grace is ended (the client reconnects);
- the near-cache: many distinct, valid but large pages leave the read server's memory
  bounded by ``CQRS_NEAR_CACHE_BYTES`` (200 pages of 1.5 MB took it up by gigabytes'
  worth of a document count).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from common.pb.shop.v1 import command_service_pb2 as cpb
from common.pb.shop.v1 import command_service_pb2_grpc as cpb_grpc
from common.pb.shop.v1 import query_service_pb2 as qpb
from common.pb.shop.v1 import query_service_pb2_grpc as qpb_grpc
from common.settings import Settings
from tests.faults.load import wait_visible
from tests.support.servers import Process, env_for, free_port, start, wait_serving
from tests.support.system import System, running

pytestmark = pytest.mark.e2e

LOCAL = [("grpc.use_local_subchannel_pool", 1)]  # a connection of its own per channel
CHECK = health_pb2.HealthCheckRequest()


_LISTEN = "0A"  # a socket's state in /proc/net/tcp


def _outgoing_sockets(port: int) -> set[str]:
    """Inodes of the TCP sockets on this host that are neither listening nor on ``port``:
    in a server process, its own connections out (PostgreSQL, Redis, a metrics scrape)."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if local_port != port and fields[3] != _LISTEN:
                inodes.add(fields[9])
    return inodes


def descriptors(process: Process, address: str) -> int:
    """The open descriptors of the process serving ``address``, less its own connections
    out: its pools open and close those on their own schedule (an idle one closed, a
    background task's reopened), which is not what clients can make it hold."""
    port = int(address.rsplit(":", 1)[1])
    folder = f"/proc/{process.proc.pid}/fd"
    outgoing = _outgoing_sockets(port)
    count = 0
    for fd in os.listdir(folder):
        with contextlib.suppress(OSError):  # closed meanwhile
            link = os.readlink(f"{folder}/{fd}")
            if not (link.startswith("socket:[") and link[8:-1] in outgoing):
                count += 1
    return count


def rss_mb(process: Process) -> float:
    for line in Path(f"/proc/{process.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


async def settle(process: Process, address: str, at_most: int, within: float) -> int:
    """The process's descriptor count once it is at most ``at_most`` (else the last one
    seen after ``within`` seconds)."""
    count = descriptors(process, address)
    for _ in range(int(within / 0.1)):
        if count <= at_most:
            break
        await asyncio.sleep(0.1)
        count = descriptors(process, address)
    return count


@pytest.fixture
def read_server(
    settings: Settings, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[tuple[Process, str]]:
    """A ``cqrs read-server`` process with the limits in ``request.param`` (env)."""
    port = free_port()
    env = env_for(settings, CQRS_READ_PORT=str(port), **request.param)
    process = start(["read-server"], env, tmp_path / "read.log")
    address = f"127.0.0.1:{port}"
    try:
        wait_serving(address, process)
        yield process, address
    finally:
        code = process.stop()
    assert code == 0, process.log()


async def real_call(address: str) -> None:
    """A read that needs the server's pools: served."""
    async with grpc.aio.insecure_channel(address, options=LOCAL) as channel:
        stub = qpb_grpc.QueryServiceStub(channel)
        await stub.ListProducts(qpb.ListProductsRequest(source=qpb.SOURCE_WRITE_MODEL), timeout=5)


CONNECTIONS = {
    "CQRS_GRPC_MAX_CONNECTIONS": "20",
    "CQRS_GRPC_HANDSHAKE_TIMEOUT_MS": "1000",
    "CQRS_GRPC_CONNECTION_IDLE_MS": "1500",
}


@pytest.mark.parametrize("read_server", [CONNECTIONS], indirect=True)
async def test_raw_and_idle_connections_cannot_take_the_descriptors(
    read_server: tuple[Process, str],
) -> None:
    process, address = read_server
    await real_call(address)  # the pools' connections are open from here on
    base = await settle(
        process, address, 0, 2.5
    )  # wait_serving's and real_call's connections idle out
    host, port = address.rsplit(":", 1)

    # 1. 300 raw TCP connections that never say a word: 20 are held, the rest closed at
    #    once; the 20 go after the handshake time.
    raw = [socket.create_connection((host, int(port))) for _ in range(300)]
    try:
        await asyncio.sleep(0.5)
        held = descriptors(process, address)
        assert held <= base + 20 + 2, (base, held)
        after = await settle(process, address, base, 3.0)
        assert after <= base, (base, after)
        await real_call(address)
    finally:
        for sock in raw:
            sock.close()

    # 2. 15 clients that made a call and went quiet: dropped after the idle time.
    channels = [grpc.aio.insecure_channel(address, options=LOCAL) for _ in range(15)]
    try:
        for channel in channels:
            await health_pb2_grpc.HealthStub(channel).Check(CHECK, timeout=5)
        assert descriptors(process, address) >= base + 15
        after = await settle(process, address, base, 4.0)
        assert after <= base, (base, after)
        # An idle client reconnects transparently.
        reply = await health_pb2_grpc.HealthStub(channels[0]).Check(CHECK, timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        for channel in channels:
            await channel.close()


AGE = {"CQRS_GRPC_CONNECTION_AGE_MS": "1000", "CQRS_GRPC_CONNECTION_AGE_GRACE_MS": "500"}


@pytest.mark.parametrize("read_server", [AGE], indirect=True)
async def test_a_stream_cannot_hold_a_connection_past_its_age(
    read_server: tuple[Process, str],
) -> None:
    _, address = read_server
    async with grpc.aio.insecure_channel(address, options=LOCAL) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        watch = health.Watch(CHECK)
        assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
        started = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as ended:
            await asyncio.wait_for(watch.read(), 5.0)
        assert ended.value.code() == grpc.StatusCode.UNAVAILABLE
        assert time.monotonic() - started < 3.0
        reply = await health.Check(CHECK, timeout=5)  # a new connection
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


# -- the near-cache --------------------------------------------------------------------------

PRODUCTS, CALLS = 300, 200
CATEGORY = "c" * 200  # as long as a stored category can be


@pytest.fixture
def system(settings: Settings, tmp_path: Path) -> Iterator[System]:
    with running(settings, tmp_path) as system:
        yield system


async def test_many_large_distinct_pages_leave_the_read_server_memory_bounded(
    system: System,
) -> None:
    """300 products of 5 kB in one category, listed as 200 distinct pages (every page
    size is a key of its own) of 1.5 MB: 300 MB that a bound of 50,000 documents let the
    near-cache keep. With the default byte bound (64 MiB per process) the read server
    grows by a fraction of that."""
    async with grpc.aio.insecure_channel(system.write) as channel:
        write = cpb_grpc.CommandServiceStub(channel)
        replies = []
        for first in range(0, PRODUCTS, 50):  # 50 in flight: a connection takes 100
            replies += await asyncio.gather(
                *(
                    write.CreateProduct(
                        cpb.CreateProductRequest(
                            name=f"p{n}",
                            description=f"{n:05d}" + "d" * 4995,
                            price_cents=1,
                            currency="EUR",
                            category=CATEGORY,
                        )
                    )
                    for n in range(first, first + 50)
                )
            )
    read_process = system.processes["read"]
    async with grpc.aio.insecure_channel(system.read) as channel:
        for reply in replies:
            await wait_visible(qpb_grpc.QueryServiceStub(channel), reply.consistency_token)
        list_products = channel.unary_unary("/shop.v1.QueryService/ListProducts")  # raw bytes
        await list_products(qpb.ListProductsRequest(page_size=1).SerializeToString())
        before = rss_mb(read_process)
        largest = 0.0
        for n in range(CALLS):
            request = qpb.ListProductsRequest(category=CATEGORY, page_size=1000 - n)
            reply = await list_products(request.SerializeToString(), timeout=30)
            assert len(reply) > PRODUCTS * 5000
            largest = max(largest, rss_mb(read_process))
    grown = largest - before
    print(f"\nread server RSS {before:.0f} MB -> at most {largest:.0f} MB (+{grown:.0f} MB)")
    assert grown < 120, f"+{grown:.0f} MB"
