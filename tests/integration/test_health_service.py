"""Our gRPC health service answers a hostile service name with a short NOT_FOUND: the
name is the caller's, and echoing 20,000 characters of it would overflow the trailers
(the client then sees RESOURCE_EXHAUSTED instead; the hostile-input test found this)."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

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
