"""SIGTERM on the real write and read server processes.

Each test holds a call in flight on purpose (the write server: an UpdateProduct waiting
for the product's lock, which the test holds in PostgreSQL; the read server: a read
waiting for its consistency token, with no projector yet), then sends SIGTERM and
checks the order of things: health NOT_SERVING first (a Watch stream is told, then
ends; /healthz answers 503), new calls refused, the call in flight completes OK, and
the process exits 0 within the grace period. With a drain period a polling health
Check sees NOT_SERVING while calls are still taken; past the grace a call that still
runs is cancelled and the process exits all the same.
"""

from __future__ import annotations

import asyncio
import signal
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from common.pb.shop.v1 import command_service_pb2 as cpb
from common.pb.shop.v1 import command_service_pb2_grpc as cpb_grpc
from common.pb.shop.v1 import query_service_pb2 as qpb
from common.pb.shop.v1 import query_service_pb2_grpc as qpb_grpc
from common.settings import Settings
from tests.support.servers import Process, env_for, free_port, start, wait_serving
from write_server.adapters.postgres_uow import lock_key

pytestmark = pytest.mark.e2e

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def healthz(port: int) -> int:
    """The HTTP status of /healthz on ``port``."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as exc:
        return exc.code


async def refused(address: str) -> grpc.StatusCode:
    """The code a brand-new client gets from a health Check now."""
    async with grpc.aio.insecure_channel(address) as channel:
        try:
            await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=3
            )
        except grpc.aio.AioRpcError as exc:
            return exc.code()
    return grpc.StatusCode.OK


async def wait_exit(process: Process, within: float) -> int:
    """The exit code, waiting at most ``within`` seconds (then the test fails)."""
    deadline = time.monotonic() + within
    while process.proc.poll() is None:
        assert time.monotonic() < deadline, f"still running after {within}s:\n{process.log()}"
        await asyncio.sleep(0.05)
    return process.proc.returncode


@asynccontextmanager
async def product_lock(settings: Settings, product_id: str) -> AsyncIterator[asyncpg.Connection]:
    """Hold the advisory lock the write server takes for ``product_id``'s commands."""
    conn = await asyncpg.connect(settings.asyncpg_dsn)
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", lock_key(product_id))
        yield conn
    finally:
        await conn.close()  # releases the lock if the test did not


async def wait_lock_waiter(conn: asyncpg.Connection) -> None:
    """Until some session waits for an advisory lock (the write server's command)."""
    for _ in range(400):
        waiting = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE wait_event_type = 'Lock' AND wait_event = 'advisory' AND pid <> pg_backend_pid()"
        )
        if waiting:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the command never waited for the lock")


def start_write(settings: Settings, tmp: Path, **extra: str) -> tuple[Process, str, int]:
    port, ops = free_port(), free_port()
    env = env_for(settings, CQRS_WRITE_PORT=str(port), CQRS_WRITE_METRICS_PORT=str(ops), **extra)
    process = start(["write-server"], env, tmp / "write.log")
    address = f"127.0.0.1:{port}"
    wait_serving(address, process)
    return process, address, ops


async def create_product(stub: Any) -> str:
    reply = await stub.CreateProduct(
        cpb.CreateProductRequest(name="p", price_cents=1, currency="EUR", stock=1), timeout=20
    )
    return str(reply.id)


async def test_write_server_sigterm(settings: Settings, tmp_path: Path) -> None:
    grace_s = 20.0
    process, address, ops = start_write(settings, tmp_path, CQRS_SHUTDOWN_GRACE_MS="20000")
    try:
        assert healthz(ops) == 200
        async with grpc.aio.insecure_channel(address) as channel:
            stub = cpb_grpc.CommandServiceStub(channel)
            product = await create_product(stub)
            async with product_lock(settings, product) as lock:
                watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest())
                assert (await watch.read()).status == SERVING
                update = asyncio.ensure_future(
                    stub.UpdateProduct(
                        cpb.UpdateProductRequest(id=product, price_cents=2), timeout=60
                    )
                )
                await wait_lock_waiter(lock)
                process.proc.send_signal(signal.SIGTERM)
                signalled = time.monotonic()

                # 1. Health says NOT_SERVING, and the Watch ends (it does not hold the server).
                told = await asyncio.wait_for(watch.read(), 10)
                assert told.status == NOT_SERVING
                assert await asyncio.wait_for(watch.read(), 10) is grpc.aio.EOF
                assert await watch.code() == grpc.StatusCode.OK
                assert await asyncio.to_thread(healthz, ops) == 503
                # 2. New calls are refused while the call in flight holds the process.
                assert await refused(address) == grpc.StatusCode.UNAVAILABLE
                await asyncio.sleep(0.5)
                assert not update.done() and process.proc.poll() is None, process.log()
                await lock.execute("SELECT pg_advisory_unlock($1)", lock_key(product))
                # 3. The call started before the signal completes OK.
                reply = await asyncio.wait_for(update, 30)
                assert reply.version == 2
        # 4. The process exits 0 within the grace period.
        assert await wait_exit(process, grace_s) == 0, process.log()
        assert time.monotonic() - signalled < grace_s
    finally:
        process.stop()
    assert "shutting down" in process.log()


async def test_a_call_still_running_past_the_grace_is_cancelled(
    settings: Settings, tmp_path: Path
) -> None:
    process, address, _ = start_write(settings, tmp_path, CQRS_SHUTDOWN_GRACE_MS="1500")
    try:
        async with grpc.aio.insecure_channel(address) as channel:
            stub = cpb_grpc.CommandServiceStub(channel)
            product = await create_product(stub)
            async with product_lock(settings, product) as lock:
                update = asyncio.ensure_future(
                    stub.UpdateProduct(
                        cpb.UpdateProductRequest(id=product, price_cents=2), timeout=60
                    )
                )
                await wait_lock_waiter(lock)
                process.proc.send_signal(signal.SIGTERM)
                signalled = time.monotonic()
                # Exits with the lock still held: the grace (1.5 s) ran out, not the call.
                assert await wait_exit(process, 15) == 0, process.log()
                stopped_after = time.monotonic() - signalled
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await asyncio.wait_for(update, 10)
                assert info.value.code() in (
                    grpc.StatusCode.CANCELLED,
                    grpc.StatusCode.UNAVAILABLE,
                ), info.value
        assert 1.5 <= stopped_after < 12, stopped_after
    finally:
        process.stop()


async def test_drain_period_lets_polling_health_checks_see_not_serving(
    settings: Settings, tmp_path: Path
) -> None:
    process, address, ops = start_write(
        settings, tmp_path, CQRS_SHUTDOWN_DRAIN_MS="3000", CQRS_SHUTDOWN_GRACE_MS="5000"
    )
    try:
        async with grpc.aio.insecure_channel(address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            stub = cpb_grpc.CommandServiceStub(channel)
            process.proc.send_signal(signal.SIGTERM)
            seen: list[str] = []
            created_while_draining = False
            deadline = time.monotonic() + 20
            while process.proc.poll() is None and time.monotonic() < deadline:
                try:
                    reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=2)
                    seen.append(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))
                    if reply.status == NOT_SERVING and not created_while_draining:
                        assert await asyncio.to_thread(healthz, ops) == 503
                        await create_product(stub)  # still taken while draining
                        created_while_draining = True
                except grpc.aio.AioRpcError as exc:
                    seen.append(exc.code().name)
                await asyncio.sleep(0.05)
        assert await wait_exit(process, 20) == 0, process.log()
    finally:
        process.stop()
    # Maybe SERVING before the signal arrived, then NOT_SERVING, then refused: never back.
    statuses = [s for i, s in enumerate(seen) if i == 0 or seen[i - 1] != s]
    assert "NOT_SERVING" in statuses and created_while_draining, seen
    assert statuses[statuses.index("NOT_SERVING") :][:2] in (
        ["NOT_SERVING", "UNAVAILABLE"],
        ["NOT_SERVING"],
    ), seen


async def test_read_server_sigterm(settings: Settings, tmp_path: Path) -> None:
    """A read waiting for its consistency token (no projector yet) completes OK after
    SIGTERM, once a projector has started and caught up."""
    grace_s = 30.0
    write, write_address, _ = start_write(settings, tmp_path)
    read_port, read_ops = free_port(), free_port()
    env = env_for(
        settings,
        CQRS_READ_PORT=str(read_port),
        CQRS_READ_METRICS_PORT=str(read_ops),
        CQRS_SHUTDOWN_GRACE_MS=str(int(grace_s * 1000)),
        CQRS_CONSISTENCY_WAIT_MAX_MS="60000",
    )
    read = start(["read-server"], env, tmp_path / "read.log")
    read_address = f"127.0.0.1:{read_port}"
    projector: Process | None = None
    try:
        wait_serving(read_address, read)
        async with (
            grpc.aio.insecure_channel(write_address) as write_channel,
            grpc.aio.insecure_channel(read_address) as read_channel,
        ):
            created = await cpb_grpc.CommandServiceStub(write_channel).CreateProduct(
                cpb.CreateProductRequest(name="waited for", price_cents=1, currency="EUR"),
                timeout=20,
            )
            query = qpb_grpc.QueryServiceStub(read_channel)
            waiting = asyncio.ensure_future(
                query.GetProduct(
                    qpb.GetProductRequest(
                        id=created.id,
                        source=qpb.SOURCE_PROJECTION,
                        consistency_token=created.consistency_token,
                    ),
                    timeout=90,
                )
            )
            watch = health_pb2_grpc.HealthStub(read_channel).Watch(health_pb2.HealthCheckRequest())
            assert (await watch.read()).status == SERVING
            await asyncio.sleep(1.0)
            assert not waiting.done(), "the read did not wait for its token"
            read.proc.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            assert (await asyncio.wait_for(watch.read(), 10)).status == NOT_SERVING
            assert await asyncio.wait_for(watch.read(), 10) is grpc.aio.EOF
            assert await asyncio.to_thread(healthz, read_ops) == 503
            assert await refused(read_address) == grpc.StatusCode.UNAVAILABLE
            assert not waiting.done() and read.proc.poll() is None, read.log()

            projector = start(["projector", "run"], env, tmp_path / "projector.log")
            product = await asyncio.wait_for(waiting, 60)
            assert product.name == "waited for"
        assert await wait_exit(read, grace_s) == 0, read.log()
        assert time.monotonic() - signalled < grace_s
    finally:
        codes = [p.stop() for p in (read, write, projector) if p is not None]
    assert codes == [0] * len(codes), read.log()[-3000:]
