"""Every RPC of our services has a behaviour: a missing one would only fail when the
server is built (common.rpc.handlers), so it is caught here, in milliseconds."""

from __future__ import annotations

import inspect

import pytest

from common.pb.shop.v1 import command_service_pb2, query_service_pb2
from read_server.servicer import QueryServicer
from write_server.servicer import CommandServicer


@pytest.mark.parametrize(
    ("descriptor", "servicer"),
    [
        (query_service_pb2.DESCRIPTOR.services_by_name["QueryService"], QueryServicer),
        (command_service_pb2.DESCRIPTOR.services_by_name["CommandService"], CommandServicer),
    ],
)
def test_every_rpc_has_an_async_method(descriptor: object, servicer: type) -> None:
    """A unary RPC's is a coroutine function; a server-streaming one's an async generator."""
    missing = [
        m.name
        for m in descriptor.methods  # type: ignore[attr-defined]
        if not (inspect.isasyncgenfunction if m.server_streaming else inspect.iscoroutinefunction)(
            getattr(servicer, m.name, None)
        )
    ]
    assert missing == []
