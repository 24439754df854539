"""The least-privilege roles `cqrs migrate` sets up: each process does its whole job under
its role (commands; the projector's rebuild of every consumer, analytics' schema swap
included, and verify; every read source, history and analytics after that rebuild), and
each role is refused what it must not do."""

from __future__ import annotations

import asyncio
import dataclasses
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import grpc
import pytest

from common.pb.shop.v1 import history_pb2
from common.pb.shop.v1 import query_service_pb2 as qpb
from common.pb.shop.v1 import query_service_pb2_grpc as qpb_grpc
from common.roles import PROJECTOR, READER, WRITER, ensure_roles
from common.settings import Settings
from read_server.bootstrap import bootstrap as read_bootstrap
from read_server.server import create_server
from tests.support.servers import env_for
from write_server.adapters.postgres_uow import lock_key
from write_server.bootstrap import bootstrap as write_bootstrap
from write_server.domain import commands
from write_server.service_layer.service import RequestMeta

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def as_role(settings: Settings, role: str) -> Settings:
    parts = urlsplit(settings.database_url)
    netloc = f"{role}@{parts.hostname}:{parts.port or 5432}"
    return dataclasses.replace(settings, database_url=urlunsplit(parts._replace(netloc=netloc)))


async def _refused(dsn: str, statements: list[str]) -> list[str]:
    """The statements ``dsn``'s role was NOT refused (each in its own transaction)."""
    conn = await asyncpg.connect(dsn)
    allowed = []
    try:
        for statement in statements:
            try:
                async with conn.transaction():
                    await conn.execute(statement)
                    allowed.append(statement)
            except asyncpg.InsufficientPrivilegeError:
                pass
    finally:
        await conn.close()
    return allowed


async def _cqrs(settings: Settings, *args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "cqrs",
        *args,
        cwd=ROOT,
        env=env_for(settings, CQRS_LOG_LEVEL="WARNING"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def test_each_process_works_under_its_role_and_only_there(settings: Settings) -> None:
    # What `cqrs migrate` does (the test database is a copy of a migrated template, and a
    # copy does not inherit database-level grants).
    admin = await asyncpg.connect(settings.asyncpg_dsn)
    try:
        assert await ensure_roles(admin)
        assert await ensure_roles(admin)  # idempotent
    finally:
        await admin.close()

    # The write server's job under cqrs_writer.
    writer = await write_bootstrap(as_role(settings, WRITER))
    try:
        meta = RequestMeta(auth_subject="roles-test")
        product = await writer.service.execute(
            commands.CreateProduct(name="Mug", price_cents=500, currency="EUR", stock=10), meta
        )
        customer = await writer.service.execute(
            commands.CreateCustomer(name="Ann", email="ann@example.org"), meta
        )
        await writer.service.execute(
            commands.PlaceOrder(
                customer_id=customer.id,
                items=(commands.OrderItemRequest(product_id=product.id, quantity=2),),
            ),
            meta,
        )
    finally:
        await writer.close()

    # The projector's job under cqrs_projector, twice: the second rebuild replaces what
    # the projector itself created in the first (the analytics schema, swapped tables).
    projector = as_role(settings, PROJECTOR)
    for _ in range(2):
        code, out = await _cqrs(projector, "projector", "rebuild")
        assert code == 0, out
    code, out = await _cqrs(projector, "projector", "verify")
    assert code == 0, out

    # The read server's job under cqrs_reader, after those rebuilds.
    reader = await read_bootstrap(as_role(settings, READER))
    built = create_server(reader, "127.0.0.1:0")
    await built.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{built.port}") as channel:
            stub = qpb_grpc.QueryServiceStub(channel)
            for source in (qpb.SOURCE_PROJECTION, qpb.SOURCE_READ_MODEL, qpb.SOURCE_WRITE_MODEL):
                got = await stub.GetProduct(qpb.GetProductRequest(id=product.id, source=source))
                assert got.stock == 8
            history = await stub.GetAggregateHistory(
                qpb.GetAggregateHistoryRequest(
                    aggregate_type=history_pb2.AGGREGATE_TYPE_PRODUCT, aggregate_id=product.id
                )
            )
            assert [e.metadata.subject for e in history.events] == ["roles-test"] * 2
            stats = await stub.GetCustomerStats(
                qpb.GetCustomerStatsRequest(customer_id=customer.id, source=qpb.SOURCE_READ_MODEL)
            )
            assert stats.total_orders == 1
    finally:
        await built.server.stop(None)
        await reader.close()

    # Refusals.
    def dsn(role: str) -> str:
        return as_role(settings, role).asyncpg_dsn

    assert (
        await _refused(
            dsn(READER),
            [
                "INSERT INTO products (id, name) VALUES (gen_random_uuid(), 'x')",
                "UPDATE events SET payload = '{}'",
                "DELETE FROM read.product_read_model",
                "TRUNCATE analytics.months",
                "UPDATE read.projection_checkpoints SET seq = seq",
                "CREATE TABLE public.sneaky (x int)",
                "CREATE SCHEMA sneaky",
                # the webhook signing secrets
                "SELECT secret FROM webhook_subscriptions",
                "UPDATE webhooks.deliveries SET status = 'PENDING'",
            ],
        )
        == []
    )
    assert (
        await _refused(
            dsn(PROJECTOR),
            [
                "INSERT INTO events (aggregate_type) VALUES ('x')",
                "UPDATE products SET stock = 0",
                "DELETE FROM orders",
                "TRUNCATE command_requests",
                "UPDATE webhook_subscriptions SET secret = 'x'",
            ],
        )
        == []
    )
    assert (
        await _refused(
            dsn(WRITER),
            [
                "DELETE FROM read.product_read_model",
                "UPDATE read.projection_checkpoints SET seq = seq",
                "INSERT INTO analytics.months DEFAULT VALUES",
                "SELECT * FROM analytics.months",
                "UPDATE webhooks.deliveries SET status = 'PENDING'",
                "CREATE TABLE public.sneaky (x int)",
                "DROP TABLE products",
            ],
        )
        == []
    )


@pytest.fixture
async def roles(settings: Settings) -> Settings:
    """The test database with the roles granted (a template copy lacks database grants)."""
    admin = await asyncpg.connect(settings.asyncpg_dsn)
    try:
        assert await ensure_roles(admin)
    finally:
        await admin.close()
    return settings


async def _some_history(settings: Settings, role: str | None = None) -> str:
    """A product, a customer and an order (as ``role``, or the migrating user); the
    product's id."""
    app = await write_bootstrap(as_role(settings, role) if role else settings)
    try:
        meta = RequestMeta(auth_subject="roles-test")
        product = await app.service.execute(
            commands.CreateProduct(name="Mug", price_cents=500, currency="EUR", stock=10), meta
        )
        customer = await app.service.execute(
            commands.CreateCustomer(name="Ann", email=f"ann-{product.id}@example.org"), meta
        )
        await app.service.execute(
            commands.PlaceOrder(
                customer_id=customer.id,
                items=(commands.OrderItemRequest(product_id=product.id, quantity=2),),
                request_id=f"order-{product.id}",
            ),
            meta,
        )
        return product.id
    finally:
        await app.close()


async def test_the_event_log_is_append_only_for_every_role(roles: Settings) -> None:
    await _some_history(roles, WRITER)
    rewrites = [
        "UPDATE events SET payload = '{}'",
        "DELETE FROM events",
        "TRUNCATE events",
        "UPDATE command_requests SET reply = '{}'",
        "DELETE FROM command_requests",
    ]
    for role in (WRITER, READER, PROJECTOR):
        assert await _refused(as_role(roles, role).asyncpg_dsn, rewrites) == [], role
    # The writer does what commands do and nothing more: soft deletes, lines never change.
    assert (
        await _refused(
            as_role(roles, WRITER).asyncpg_dsn,
            [
                "DELETE FROM products",
                "DELETE FROM customers",
                "DELETE FROM orders",
                "DELETE FROM order_items",
                "UPDATE order_items SET quantity = quantity",
                "DELETE FROM webhook_subscriptions",
                "TRUNCATE products",
                "SELECT setval('order_number_seq', 1)",
            ],
        )
        == []
    )


async def test_only_the_write_side_may_take_advisory_locks(roles: Settings) -> None:
    product_id = await _some_history(roles, WRITER)
    # A reader holding a product's lock made its UpdateProduct wait, then fail.
    key = lock_key(product_id)
    assert (
        await _refused(
            as_role(roles, READER).asyncpg_dsn,
            [
                f"SELECT pg_advisory_lock({key})",
                f"SELECT pg_advisory_xact_lock({key})",
                f"SELECT pg_try_advisory_lock({key})",
                f"SELECT pg_advisory_lock_shared({key})",
                "SELECT pg_advisory_xact_lock(1, 2)",
                "SELECT pg_try_advisory_xact_lock_shared(1, 2)",
            ],
        )
        == []
    )
    admin = await asyncpg.connect(roles.asyncpg_dsn)
    try:
        # Every function that takes an advisory lock (unlocking only frees one's own).
        functions = [
            row[0]
            for row in await admin.fetch(
                "SELECT oid::regprocedure::text FROM pg_proc WHERE proname LIKE 'pg%advisory%'"
                " AND proname NOT LIKE '%unlock%'"
            )
        ]
        assert len(functions) == 16  # 8 lock-taking functions, (bigint) and (int, int) each
        for role, may in ((READER, False), (WRITER, True), (PROJECTOR, True)):
            for function in functions:
                allowed = await admin.fetchval(
                    "SELECT has_function_privilege($1, $2, 'EXECUTE')", role, function
                )
                assert allowed is may, (role, function)
    finally:
        await admin.close()
    # The write side still takes them (commands lock; the projector's rebuild lock).
    await _some_history(roles, WRITER)
    for role in (WRITER, PROJECTOR):
        conn = await asyncpg.connect(as_role(roles, role).asyncpg_dsn)
        try:
            assert await conn.fetchval(f"SELECT pg_try_advisory_lock({key})")
            assert await conn.fetchval(f"SELECT pg_advisory_unlock({key})")
        finally:
            await conn.close()


async def test_the_reader_cannot_read_command_replies(roles: Settings) -> None:
    await _some_history(roles, WRITER)
    for role in (READER, PROJECTOR):
        assert (
            await _refused(
                as_role(roles, role).asyncpg_dsn,
                ["SELECT reply FROM command_requests", "SELECT count(*) FROM command_requests"],
            )
            == []
        ), role


async def test_what_a_rebuild_run_as_the_migrating_user_creates_stays_readable(
    roles: Settings,
) -> None:
    """`cqrs up` as postgres: the projector's rebuild creates the tables (and the analytics
    schema) it swaps in as postgres. The reader must still read them all, and the projector
    rebuild them again under its own role."""
    await _some_history(roles)
    code, out = await _cqrs(roles, "projector", "rebuild")
    assert code == 0, out
    admin = await asyncpg.connect(roles.asyncpg_dsn)
    try:
        tables = [
            f"{row['schemaname']}.{row['tablename']}"
            for row in await admin.fetch(
                "SELECT schemaname, tablename FROM pg_tables"
                " WHERE schemaname IN ('read', 'analytics', 'webhooks') ORDER BY 1, 2"
            )
        ]
    finally:
        await admin.close()
    assert "read.product_read_model" in tables and "analytics.months" in tables
    reads = [f"SELECT count(*) FROM {table}" for table in tables]
    assert await _denied(as_role(roles, READER).asyncpg_dsn, reads) == []

    code, out = await _cqrs(as_role(roles, PROJECTOR), "projector", "rebuild")
    assert code == 0, out
    assert await _denied(as_role(roles, READER).asyncpg_dsn, reads) == []


async def _denied(dsn: str, statements: list[str]) -> list[str]:
    """The statements ``dsn``'s role WAS refused."""
    conn = await asyncpg.connect(dsn)
    refused = []
    try:
        for statement in statements:
            try:
                await conn.execute(statement)
            except asyncpg.InsufficientPrivilegeError:
                refused.append(statement)
    finally:
        await conn.close()
    return refused
