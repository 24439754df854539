"""The webhook dispatcher against hostile endpoints (issue 20, items 1, 2, 5 and 7): real
commands, the real fan-out and dispatcher (``cqrs projector run``'s own objects), real HTTP
to receivers on 127.0.0.1.

Where a test needs a name that resolves differently on each lookup, the process's
``socket.getaddrinfo`` is replaced by a scripted resolver for that name only (IP literals
still resolve, every other name fails: no lookup leaves this machine). That is the one
hook the code before the fix had too, so the same test shows the rebinding it allowed.
"""

from __future__ import annotations

import logging
import socket
from typing import Any

import pytest

from projector.bootstrap import App
from tests.integration.test_webhooks import deliveries, products, subscribe, system
from tests.support.events import eventually
from tests.support.hostile_http import HostileServer, drip, huge_body
from tests.support.http_receiver import Receiver
from tests.support.resolver_stub import ScriptedResolver
from write_server.domain import commands
from write_server.service_layer.service import CommandService

pytestmark = pytest.mark.integration

STRICT: dict[str, Any] = dict(webhooks_allow_private=False, webhooks_max_attempts=3)
SECRET_PAGE = b"INTERNAL-SECRET: root password is hunter2"


def scripted(monkeypatch: pytest.MonkeyPatch, script: dict[str, Any]) -> ScriptedResolver:
    resolver = ScriptedResolver(script)
    monkeypatch.setattr(socket, "getaddrinfo", resolver.getaddrinfo)
    return resolver


async def rows_when(app: App, sub_id: str, status: str, within: float = 15) -> list[Any]:
    """The subscription's deliveries once the first one has ``status``."""

    async def reached() -> bool:
        rows = await deliveries(app, sub_id)
        return bool(rows) and rows[0]["status"] == status

    await eventually(reached, within=within)
    return await deliveries(app, sub_id)


async def parked(app: App, sub_id: str) -> bool:
    value = await app.pool.fetchval(
        "SELECT parked_at IS NOT NULL FROM webhooks.subscriptions WHERE id = $1::uuid", sub_id
    )
    return bool(value)


async def test_a_name_whose_lookup_fails_then_rebinds_never_reaches_the_internal_service(
    template_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before the fix: the check's lookup failed (passed as "let the HTTP call report
    it"), the connection's own lookup answered 127.0.0.1, and the internal service got the
    signed POST; its answer then showed in last_error."""
    failure = socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
    resolver = scripted(monkeypatch, {"hooks.rebind.test": [failure, ["127.0.0.1"]]})
    async with Receiver() as internal, system(template_database, **STRICT) as (app, service):
        internal.status(403, SECRET_PAGE)
        sub = await subscribe(service, f"http://hooks.rebind.test:{internal.port}/hook")
        await products(service, 1)
        (row,) = await rows_when(app, sub.id, "FAILED")
        assert internal.requests == [], "a signed POST reached the internal service"
        assert "INTERNAL-SECRET" not in row["last_error"]
        # The failed lookup was an attempt refused (nothing sent); the rebound answer was
        # refused for good: FAILED and parked at once, saying why.
        assert row["attempts"] == 2
        assert row["last_error"].startswith("refused: ")
        assert "'hooks.rebind.test' resolves to 127.0.0.1" in row["last_error"]
        assert await parked(app, sub.id)
        assert resolver.count("hooks.rebind.test") == 2  # one lookup per attempt


async def test_a_name_resolving_to_a_private_address_fails_at_once_unsent(
    template_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    scripted(monkeypatch, {"intranet.test": [["10.0.0.1", "127.0.0.1"]]})
    async with Receiver() as internal, system(template_database, **STRICT) as (app, service):
        sub = await subscribe(service, f"http://intranet.test:{internal.port}/hook")
        # Two events of one aggregate: the second may only go after the first.
        (pid,) = await products(service, 1)
        await service.execute(commands.UpdateProduct(id=pid, changes={"stock": 1}))
        first, second = await rows_when(app, sub.id, "FAILED")
        # Not retried: a refused address is refused again (before the fix: three attempts).
        assert first["attempts"] == 1
        assert "resolves to 10.0.0.1" in first["last_error"]
        assert (second["status"], second["attempts"]) == ("PENDING", 0)  # waits, in order
        assert await parked(app, sub.id)
        assert internal.requests == []
        assert app.gateway is not None
        assert app.gateway.breaker_state(f"intranet.test:{internal.port}") == "closed"


@pytest.mark.parametrize(
    "stored",
    [
        "http://example.com\t.127.0.0.1/hook",
        "http://\uff45\uff58\uff41\uff4d\uff50\uff4c\uff45.com/hook",
    ],
    ids=["tab", "fullwidth"],
)
async def test_a_stored_url_the_client_cannot_send_to_is_failed_and_parked_not_looped(
    template_database: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    stored: str,
) -> None:
    """A URL accepted before today's rules (the validator's parser and the client's
    disagreed) is in the table: its delivery fails once, with the reason, no traceback."""
    scripted(monkeypatch, {})
    caplog.set_level(logging.WARNING, logger="projector.webhooks.dispatcher")
    async with system(template_database, **STRICT) as (app, service):
        sub = await subscribe(service, "http://placeholder.test/hook")

        async def projected() -> bool:
            n = await app.pool.fetchval("SELECT count(*) FROM webhooks.subscriptions")
            return bool(n == 1)

        await eventually(projected, within=10)
        await app.pool.execute("UPDATE webhooks.subscriptions SET url = $1", stored)
        await products(service, 1)
        (row,) = await rows_when(app, sub.id, "FAILED", within=10)
        assert row["attempts"] == 1 and row["last_error"].startswith("refused: url ")
        assert await parked(app, sub.id)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [], [r.getMessage() for r in errors]


async def test_a_huge_answer_leaves_a_short_excerpt_and_is_not_read_whole(
    template_database: str,
) -> None:
    async with (
        HostileServer(huge_body(64 * 1024 * 1024, status=403, fill=b"x")) as server,
        system(template_database, webhooks_max_attempts=1) as (app, service),
    ):
        sub = await subscribe(service, server.url("/hook"))
        await products(service, 1)
        (row,) = await rows_when(app, sub.id, "FAILED")
        (conn,) = await server.wait_closed(1)
    assert row["last_error"] == "HTTP 403: " + "x" * 200
    assert conn.sent < 24 * 1024 * 1024, f"{conn.sent} bytes pushed into the projector"


async def test_control_characters_in_an_answer_are_not_stored(template_database: str) -> None:
    """NUL in last_error is a PostgreSQL error: the delivery could never be recorded."""
    async with (
        Receiver() as r,
        system(template_database, webhooks_max_attempts=1) as (app, service),
    ):
        r.status(400, b"\x00bad\x1b[31m\xffinput")
        sub = await subscribe(service, r.url("/hook"))
        await products(service, 1)
        (row,) = await rows_when(app, sub.id, "FAILED")
    assert row["last_error"] == "HTTP 400: ?bad?[31m\ufffdinput"


async def test_slow_receivers_holding_the_pool_do_not_fail_another_subscription(
    template_database: str,
) -> None:
    """Six receivers dripping a byte every 0.3 s, a pool of four connections: the healthy
    subscription waits for its turn (not an attempt) and every delivery of it succeeds at
    its first attempt. Before the fix the drips held the pool for good and the healthy
    one failed with PoolTimeout three times and was parked."""
    overrides: dict[str, Any] = dict(
        gateway_max_connections=4, webhooks_max_attempts=3, webhooks_timeout_ms=1000
    )
    dripping = [HostileServer(drip(0.3, total=10_000)) for _ in range(6)]
    async with Receiver() as healthy, system(template_database, **overrides) as (app, service):
        for server in dripping:
            await server.__aenter__()
        try:
            for s in dripping:
                await subscribe(service, s.url("/drip"))
            await products(service, 1)

            async def pool_full() -> bool:
                return sum(len(s.connections) for s in dripping) >= 4

            await eventually(pool_full, within=10)  # four drips hold the four connections
            fine = await subscribe(service, healthy.url("/fine"))
            await products(service, 3)

            async def all_delivered() -> bool:
                got = await deliveries(app, fine.id)
                return [r["status"] for r in got] == ["DELIVERED"] * 3

            await eventually(all_delivered, within=20)
            rows = await deliveries(app, fine.id)
            assert [r["attempts"] for r in rows] == [1, 1, 1]
            assert not await parked(app, fine.id)
            assert len(healthy.requests) == 3
        finally:
            for server in dripping:
                await server.__aexit__(None, None, None)


async def test_a_service_without_allow_private_refuses_internal_urls_at_subscription(
    template_database: str,
) -> None:
    """The command side's guard (the e2e test drives the real server with the full table)."""
    from common.errors import InvalidArgument
    from write_server.bootstrap import command_service

    async with system(template_database) as (app, _):
        strict: CommandService = command_service(app.pool, allow_private_webhooks=False)
        for url in ("http://2130706433/", "http://[::ffff:0:127.0.0.1]/", "http://0x7f.1/"):
            with pytest.raises(InvalidArgument) as caught:
                await subscribe(strict, url)
            assert [v.field for v in caught.value.violations] == ["url"]
