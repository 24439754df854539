"""``cqrs_rpc_total`` and ``cqrs_rpc_latency_seconds`` over a real grpc.aio server: every
way a call can end (OK, an application error, an abort, a bug, a request that cannot be
decoded, a client that gives up, health and reflection) is counted exactly once, under
its own method and status code."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from prometheus_client import REGISTRY

from common import errors
from common.pb.shop.v1 import command_service_pb2 as pb
from common.pb.shop.v1 import command_service_pb2_grpc as pb_grpc
from common.rpc.server import Service, build_server
from write_server.server import SERVICE

pytestmark = pytest.mark.integration

S = "/shop.v1.CommandService/"
HEALTH = "/grpc.health.v1.Health/"
REFLECTION = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"


class Behaviours:
    """One way of ending a call per RPC."""

    def __init__(self) -> None:
        self.started = asyncio.Event()

    async def CreateProduct(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return pb.CommandReply(id="ok")

    async def UpdateProduct(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        raise errors.NotFound("no such product")

    async def DeleteProduct(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(grpc.StatusCode.PERMISSION_DENIED, "not yours")

    async def CreateCustomer(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        raise RuntimeError("a bug")

    async def UpdateCustomer(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        raise errors.InvalidArgument(errors.FieldViolation("name", "must not be empty"))

    async def PlaceOrder(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        self.started.set()
        await asyncio.sleep(30)  # the client gives up first
        return pb.CommandReply()

    def __getattr__(self, name: str) -> Callable[..., Any]:
        async def rpc(request: Any, context: grpc.aio.ServicerContext) -> Any:
            return pb.CommandReply()

        return rpc


def count(method: str, code: str) -> float:
    return REGISTRY.get_sample_value("cqrs_rpc_total", {"method": method, "code": code}) or 0.0


def observed(method: str) -> float:
    return REGISTRY.get_sample_value("cqrs_rpc_latency_seconds_count", {"method": method}) or 0.0


@asynccontextmanager
async def serving(servicer: Behaviours) -> AsyncIterator[grpc.aio.Channel]:
    built = build_server("127.0.0.1:0", [Service(SERVICE, servicer)])
    await built.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{built.port}") as channel:
            yield channel
    finally:
        await built.server.stop(None)


async def code_of(call: Any) -> grpc.StatusCode:
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


async def test_every_ending_of_a_call_is_counted_once_under_its_code() -> None:
    expected = {
        (S + "CreateProduct", "OK"),
        (S + "UpdateProduct", "NOT_FOUND"),
        (S + "DeleteProduct", "PERMISSION_DENIED"),
        (S + "CreateCustomer", "INTERNAL"),
        (S + "UpdateCustomer", "INVALID_ARGUMENT"),
        (S + "DeleteCustomer", "INVALID_ARGUMENT"),  # undecodable bytes
        (S + "PlaceOrder", "CANCELLED"),  # the client's deadline passed
        (HEALTH + "Check", "OK"),
        (HEALTH + "Check", "NOT_FOUND"),
        (REFLECTION, "OK"),
    }
    methods = {m for m, _ in expected}
    codes = ("OK", "NOT_FOUND", "PERMISSION_DENIED", "INTERNAL", "INVALID_ARGUMENT", "CANCELLED")
    before = {(m, c): count(m, c) for m in methods for c in codes}
    latency_before = {m: observed(m) for m in methods}

    servicer = Behaviours()
    async with serving(servicer) as channel:
        stub = pb_grpc.CommandServiceStub(channel)
        assert await code_of(stub.CreateProduct(pb.CreateProductRequest())) == grpc.StatusCode.OK
        got = await code_of(stub.UpdateProduct(pb.UpdateProductRequest()))
        assert got == grpc.StatusCode.NOT_FOUND
        got = await code_of(stub.DeleteProduct(pb.DeleteProductRequest()))
        assert got == grpc.StatusCode.PERMISSION_DENIED
        got = await code_of(stub.CreateCustomer(pb.CreateCustomerRequest()))
        assert got == grpc.StatusCode.INTERNAL
        got = await code_of(stub.UpdateCustomer(pb.UpdateCustomerRequest()))
        assert got == grpc.StatusCode.INVALID_ARGUMENT
        raw = channel.unary_unary(S + "DeleteCustomer")  # no serializer: sends these bytes
        assert await code_of(raw(b"\xff\xff\xff")) == grpc.StatusCode.INVALID_ARGUMENT
        got = await code_of(stub.PlaceOrder(pb.PlaceOrderRequest(), timeout=0.5))
        assert got == grpc.StatusCode.DEADLINE_EXCEEDED  # as the client sees it

        health = health_pb2_grpc.HealthStub(channel)
        assert (await health.Check(health_pb2.HealthCheckRequest())).status == 1
        got = await code_of(health.Check(health_pb2.HealthCheckRequest(service="nope")))
        assert got == grpc.StatusCode.NOT_FOUND

        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        stream = reflection.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")])
        )
        answers = [answer async for answer in stream]
        assert answers and answers[0].list_services_response.service

        async def all_counted() -> bool:
            # The server finishes its bookkeeping after the client has its answer.
            return all(observed(m) - latency_before[m] >= 1 for m in methods)

        for _ in range(200):
            if await all_counted():
                break
            await asyncio.sleep(0.05)

    after = {(m, c): count(m, c) - before[(m, c)] for m in methods for c in codes}
    assert {k for k, v in after.items() if v} == expected, after
    assert all(after[k] == 1 for k in expected), after
    for method in methods:
        # One latency observation per call: Check was called twice.
        calls = 2 if method == HEALTH + "Check" else 1
        assert observed(method) - latency_before[method] == calls, method
