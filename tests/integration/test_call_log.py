"""Log lines about RPCs over a real grpc.aio server: the bug report of an INTERNAL error
and the DEBUG access log carry method, code, duration and request id, and the access log
is decided when the server is built (off above DEBUG: nothing per call)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import grpc
import pytest

from common.pb.shop.v1 import command_service_pb2 as pb
from common.pb.shop.v1 import command_service_pb2_grpc as pb_grpc
from common.rpc.server import Service, build_server
from write_server.server import SERVICE

pytestmark = pytest.mark.integration

CREATE = "/shop.v1.CommandService/CreateProduct"


class Failing:
    """A servicer whose every RPC hits a bug (an exception no translator knows)."""

    def __getattr__(self, name: str) -> Callable[..., Any]:
        async def rpc(request: Any, context: grpc.aio.ServicerContext) -> Any:
            raise RuntimeError(f"bug in {name}")

        return rpc


@asynccontextmanager
async def serving() -> AsyncIterator[Any]:
    built = build_server("127.0.0.1:0", [Service(SERVICE, Failing())])
    await built.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{built.port}") as channel:
            yield pb_grpc.CommandServiceStub(channel)
    finally:
        await built.server.stop(None)


def records(caplog: pytest.LogCaptureFixture, logger: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == logger]


async def call(stub: Any, request_id: str = "", header: str = "") -> grpc.aio.AioRpcError:
    metadata = (("x-request-id", header),) if header else None
    request = pb.CreateProductRequest(
        name="x", price_cents=1, currency="EUR", request_id=request_id
    )
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.CreateProduct(request, metadata=metadata, timeout=10)
    return info.value


async def test_an_internal_error_is_logged_with_the_call_fields(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="common.rpc")
    async with serving() as stub:
        by_header = await call(stub, request_id="idem-1", header="trace-9")
        by_body = await call(stub, request_id="idem-2")
        anonymous = await call(stub)
    assert by_header.code() == grpc.StatusCode.INTERNAL
    errors = records(caplog, "common.rpc.handlers")
    assert len(errors) == 3
    # The header wins over the request's idempotency key; without either, no field.
    assert [getattr(r, "request_id", None) for r in errors] == ["trace-9", "idem-2", None]
    for record, error in zip(errors, (by_header, by_body, anonymous), strict=True):
        assert record.levelno == logging.ERROR and record.exc_info is not None
        assert (record.method, record.code) == (CREATE, "INTERNAL")  # type: ignore[attr-defined]
        assert record.duration_ms >= 0  # type: ignore[attr-defined]
        assert f"(ref {record.ref})" in (error.details() or "")  # type: ignore[attr-defined]

    access = records(caplog, "common.rpc.access")
    assert [(r.method, r.code) for r in access] == [(CREATE, "INTERNAL")] * 3  # type: ignore[attr-defined]
    assert [getattr(r, "request_id", None) for r in access] == ["trace-9", "idem-2", None]
    assert all(r.levelno == logging.DEBUG for r in access)


async def test_the_access_log_is_decided_when_the_server_is_built(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="common.rpc")
    async with serving() as stub:
        # Turning DEBUG on afterwards changes nothing: the handlers were built without it.
        caplog.set_level(logging.DEBUG, logger="common.rpc")
        await call(stub, request_id="idem-3")
    assert records(caplog, "common.rpc.access") == []
    (error,) = records(caplog, "common.rpc.handlers")
    assert error.request_id == "idem-3"  # type: ignore[attr-defined]


async def test_a_long_request_id_is_cut(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="common.rpc")
    async with serving() as stub:
        await call(stub, request_id="r" * 5000)
    (error,) = records(caplog, "common.rpc.handlers")
    assert error.request_id == "r" * 128  # type: ignore[attr-defined]
