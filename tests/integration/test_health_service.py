"""Our gRPC health service answers a hostile service name with a short NOT_FOUND: the
name is the caller's, and echoing 20,000 characters of it would overflow the trailers
(the client then sees RESOURCE_EXHAUSTED instead; the hostile-input test found this).

Health is reachable without a token, so what it can be made to hold is bounded: streams
per connection (the rest wait in the client, or are refused unrun), Watch streams per
process (one more is RESOURCE_EXHAUSTED at once), and a Watch for a name no service has
cannot stay open."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from common.rpc.limits import ServerLimits
from common.rpc.server import build_server
from common.rpc.status import MAX_TEXT

pytestmark = pytest.mark.integration


async def test_an_unknown_long_service_name_is_a_short_not_found() -> None:
    built = build_server("127.0.0.1:0", [])
    await built.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{built.port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            assert (await stub.Check(health_pb2.HealthCheckRequest())).status == (
                health_pb2.HealthCheckResponse.SERVING
            )
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await stub.Check(health_pb2.HealthCheckRequest(service="😇" * 20_000))
    finally:
        await built.server.stop(None)
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    assert len(raised.value.details() or "") <= MAX_TEXT


WATCH = health_pb2.HealthCheckRequest()
LOCAL = [("grpc.use_local_subchannel_pool", 1)]  # a connection of its own per channel


async def first_answer(stream: Any, within: float) -> bool:
    """Whether the Watch ``stream`` got its first status within ``within`` seconds."""
    reply = await asyncio.wait_for(stream.read(), within)
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


async def test_a_connection_has_at_most_its_streams_at_once() -> None:
    built = build_server("127.0.0.1:0", [], limits=ServerLimits(max_streams_per_connection=10))
    await built.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{built.port}", options=LOCAL) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            streams = [stub.Watch(WATCH) for _ in range(15)]
            reads = [asyncio.ensure_future(s.read()) for s in streams]
            await asyncio.wait(reads, timeout=1.0)
            # Ten are served; the client holds the others back (or, racing the server's
            # SETTINGS, has them refused: UNAVAILABLE, never run).
            served = [r for r in reads if r.done() and not r.exception()]
            assert len(served) == 10
            assert built.health.watching == 10
            for stream in streams:
                stream.cancel()
            await asyncio.gather(*reads, return_exceptions=True)
            for _ in range(100):
                if built.health.watching == 0:
                    break
                await asyncio.sleep(0.01)
            assert await first_answer(stub.Watch(WATCH), 2.0)  # the connection is fine
    finally:
        await built.server.stop(None)


async def test_a_server_has_at_most_its_watch_streams_and_one_more_is_resource_exhausted() -> None:
    built = build_server("127.0.0.1:0", [], limits=ServerLimits(health_watch_max=6))
    await built.start()
    address = f"127.0.0.1:{built.port}"
    channels = [grpc.aio.insecure_channel(address, options=LOCAL) for _ in range(3)]
    try:
        stubs = [health_pb2_grpc.HealthStub(c) for c in channels]
        streams = [stubs[n % 3].Watch(WATCH) for n in range(6)]  # two on each connection
        assert all(await asyncio.gather(*(first_answer(s, 2.0) for s in streams)))
        started = time.monotonic()
        one_more = stubs[0].Watch(WATCH)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await one_more.read()
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "at most 6" in (refused.value.details() or "")
        assert time.monotonic() - started < 1.0
        # Check still answers, and a Watch that ends frees its place.
        assert (await stubs[1].Check(WATCH)).status == health_pb2.HealthCheckResponse.SERVING
        streams[0].cancel()
        for _ in range(100):
            if built.health.watching < 6:
                break
            await asyncio.sleep(0.01)
        assert await first_answer(stubs[2].Watch(WATCH), 2.0)
    finally:
        for channel in channels:
            await channel.close()
        await built.server.stop(None)


async def test_a_watch_for_a_name_no_service_has_is_not_found_at_once() -> None:
    """A Watch for an unknown service stays open (it may appear), holding its request:
    one for a name longer than any service's is refused instead."""
    built = build_server("127.0.0.1:0", [])
    await built.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{built.port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            unknown = stub.Watch(health_pb2.HealthCheckRequest(service="not.yet.There"))
            assert (await unknown.read()).status == health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
            unknown.cancel()
            long = stub.Watch(health_pb2.HealthCheckRequest(service="x" * 1_000_000))
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await asyncio.wait_for(long.read(), 2.0)
    finally:
        await built.server.stop(None)
    assert refused.value.code() == grpc.StatusCode.NOT_FOUND
    assert len(refused.value.details() or "") <= MAX_TEXT
