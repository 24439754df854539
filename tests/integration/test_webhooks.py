"""Webhooks end to end inside one process: real commands, the real fan-out consumer and
dispatcher (``cqrs projector run``'s own objects), real HTTP to a receiver the test runs.

Signatures are checked with the reference ``standardwebhooks`` library."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
from prometheus_client import REGISTRY
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from common.settings import Settings
from projector.bootstrap import App, open_app
from projector.health import ProjectorHealth
from tests.conftest import fresh_settings
from tests.support.events import eventually
from tests.support.http_receiver import ReceivedRequest, Receiver
from tests.support.servers import ROOT, env_for
from write_server.bootstrap import command_service
from write_server.domain import commands
from write_server.service_layer.service import CommandResult, CommandService

pytestmark = pytest.mark.integration

FAST = dict(
    webhooks_allow_private=True,
    projector_poll_interval_ms=50,
    webhooks_retry_initial_ms=30,
    webhooks_retry_max_ms=100,
    webhooks_timeout_ms=1000,
    gateway_retry_attempts=1,
    gateway_breaker_threshold=1000,
    webhooks_rotation_grace_ms=0,
)


@contextlib.asynccontextmanager
async def system(
    template_database: str, names: Sequence[str] | None = None, **overrides: Any
) -> AsyncIterator[tuple[App, CommandService]]:
    """A fresh database; the projector's fan-out and dispatcher (or ``names``) running."""
    settings = fresh_settings(template_database, **{**FAST, **overrides})
    async with settings as s, open_app(s) as app:
        service = command_service(app.pool, allow_private_webhooks=True)
        stop = asyncio.Event()
        projector = app.projector(list(names or ["webhooks:fanout", "webhooks:dispatch"]))
        task = asyncio.create_task(projector.run(stop))
        try:
            yield app, service
        finally:
            stop.set()
            await asyncio.wait_for(task, 10)


async def subscribe(
    service: CommandService, url: str, *types: str, description: str = ""
) -> CommandResult:
    return await service.execute(
        commands.CreateWebhookSubscription(url=url, event_types=types, description=description)
    )


async def products(service: CommandService, n: int) -> list[str]:
    ids = []
    for i in range(n):
        r = await service.execute(
            commands.CreateProduct(name=f"p{i}", price_cents=100 + i, currency="EUR", stock=5)
        )
        ids.append(r.id)
    return ids


def verified(secret: str, request: ReceivedRequest) -> dict[str, Any]:
    payload: dict[str, Any] = Webhook(secret).verify(request.body, request.headers)
    return payload


async def deliveries(app: App, sub_id: str) -> list[Any]:
    return list(
        await app.pool.fetch(
            "SELECT * FROM webhooks.deliveries WHERE subscription_id = $1::uuid ORDER BY id",
            sub_id,
        )
    )


async def cqrs(settings: Settings, *args: str) -> tuple[int, str]:
    """``python -m cqrs <args>`` on ``settings``: exit status and output."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cqrs", *args, cwd=ROOT, env=env_for(settings),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode()


async def statuses_become(app: App, sub_id: str, expected: list[str]) -> None:
    """The subscription's deliveries reach ``expected`` statuses (in order) soon (the
    receiver sees a request before the dispatcher records its answer)."""

    async def reached() -> bool:
        return [row["status"] for row in await deliveries(app, sub_id)] == expected

    await eventually(reached, within=10)


async def test_deliveries_are_signed_in_order_per_aggregate_and_only_after_subscribing(
    template_database: str,
) -> None:
    async with Receiver() as r, system(template_database) as (app, service):
        before = await products(service, 2)  # before the subscription: never delivered
        sub = await subscribe(service, r.url("/in"), description="erp")
        ids = await products(service, 3)
        for n in range(4):
            await service.execute(commands.UpdateProduct(id=ids[0], changes={"stock": 10 + n}))
        got = await r.wait_for(7, timeout=10)
        await asyncio.sleep(0.3)
        assert len(r.requests) == 7
        bodies = [verified(sub.secret, q) for q in got]
        # One aggregate's deliveries arrive in log order; other aggregates' may overlap.
        first = [b for b in bodies if b["data"]["aggregate_id"] == ids[0]]
        assert [b["data"]["aggregate_version"] for b in first] == [1, 2, 3, 4, 5]
        assert [b["type"] for b in first] == ["ProductCreated"] + ["ProductUpdated"] * 4
        assert [b["data"]["payload"]["changes"]["stock"] for b in first[1:]] == [10, 11, 12, 13]
        assert sorted(b["data"]["aggregate_id"] for b in bodies if b not in first) == sorted(
            ids[1:]
        )
        assert not {b["data"]["aggregate_id"] for b in bodies} & set(before)
        assert len({q.headers["webhook-id"] for q in got}) == 7
        assert all(q.headers["idempotency-key"] == q.headers["webhook-id"] for q in got)
        with pytest.raises(WebhookVerificationError):
            Webhook("whsec_" + "A" * 43 + "=").verify(got[0].body, got[0].headers)
        await statuses_become(app, sub.id, ["DELIVERED"] * 7)
        rows = await deliveries(app, sub.id)
        assert sorted(f"msg_{row['id']}" for row in rows) == sorted(
            q.headers["webhook-id"] for q in got
        )
        seqs = {f"msg_{row['id']}": row["event_seq"] for row in rows}
        assert all(
            seqs[q.headers["webhook-id"]] == b["data"]["sequence"]
            for q, b in zip(got, bodies, strict=True)
        )


async def test_event_type_filter_disable_and_secret_rotation(template_database: str) -> None:
    async with Receiver() as r, system(template_database) as (app, service):
        sub = await subscribe(service, r.url("/only-created"), "ProductCreated")
        (pid,) = await products(service, 1)
        await service.execute(commands.UpdateProduct(id=pid, changes={"stock": 1}))
        (first,) = await r.wait_for(1, timeout=10)
        verified(sub.secret, first)
        rotated = await service.execute(commands.RotateWebhookSecret(id=sub.id))
        await products(service, 1)
        second = (await r.wait_for(2, timeout=10))[1]
        verified(rotated.secret, second)
        with pytest.raises(WebhookVerificationError):  # no grace period here (FAST)
            verified(sub.secret, second)
        await service.execute(commands.DisableWebhookSubscription(id=sub.id))
        await products(service, 2)
        await asyncio.sleep(0.5)
        assert len(r.requests) == 2
        assert all(json.loads(q.body)["type"] == "ProductCreated" for q in r.requests)
        state = await app.pool.fetchrow("SELECT status, version FROM webhooks.subscriptions")
        assert tuple(state) == ("DISABLED", 3)


async def test_after_a_rotation_both_secrets_sign_for_the_grace_period(
    template_database: str,
) -> None:
    async with (
        Receiver() as r,
        system(template_database, webhooks_rotation_grace_ms=60_000) as (_, service),
    ):
        sub = await subscribe(service, r.url("/rotating"))
        rotated = await service.execute(commands.RotateWebhookSecret(id=sub.id))
        await products(service, 1)
        (request,) = await r.wait_for(1, timeout=10)
        assert len(request.headers["webhook-signature"].split(" ")) == 2
        verified(rotated.secret, request)
        verified(sub.secret, request)  # receivers still on the old secret keep working


async def test_a_flapping_endpoint_is_served_by_the_gateways_retries(
    template_database: str,
) -> None:
    async with (
        Receiver() as r,
        system(template_database, gateway_retry_attempts=3) as (
            app,
            service,
        ),
    ):
        r.flapping(2)
        sub = await subscribe(service, r.url("/flap"))
        await products(service, 1)
        got = await r.wait_for(3, timeout=10)
        assert len({q.headers["idempotency-key"] for q in got}) == 1
        await statuses_become(app, sub.id, ["DELIVERED"])
        (row,) = await deliveries(app, sub.id)
        assert row["attempts"] == 1  # one attempt of the dispatcher, three HTTP requests


async def test_a_failing_endpoint_is_retried_then_parked_in_order_and_redelivered(
    template_database: str,
) -> None:
    async with (
        Receiver() as r,
        system(template_database, webhooks_max_attempts=3) as (
            app,
            service,
        ),
    ):
        r.status(500, b"down for maintenance")
        sub = await subscribe(service, r.url("/flaky"))
        await products(service, 3)
        await r.wait_for(3, timeout=10)

        await statuses_become(app, sub.id, ["FAILED", "PENDING", "PENDING"])
        await asyncio.sleep(0.3)
        # Three products, three aggregates: their first attempts may overlap. Once the head
        # failed, only it was tried again (a delivery being retried holds back everything
        # after it), three times; the later ones wait behind it, in order. A later one whose
        # own first attempt failed while the head's was still in flight may have had its
        # retry before the head failed (nothing held it back yet): at most two attempts.
        head, *later = await deliveries(app, sub.id)
        assert (head["attempts"], head["last_status"]) == (3, 500)
        assert all(row["attempts"] <= 2 for row in later)
        tried = [q.headers["webhook-id"] for q in r.requests]
        assert tried.count(f"msg_{head['id']}") == 3
        assert len(tried) == 3 + sum(row["attempts"] for row in later)
        first_retry = [i for i, t in enumerate(tried) if t == f"msg_{head['id']}"][1]
        assert set(tried[first_retry:]) == {f"msg_{head['id']}"}
        assert "HTTP 500" in head["last_error"]
        assert await app.pool.fetchval("SELECT parked_at IS NOT NULL FROM webhooks.subscriptions")

        before = len(r.requests)
        r.healthy()
        code, out = await cqrs(app.settings, "webhooks", "redeliver", "--subscription", "nope")
        assert code == 2 and "--subscription takes a UUID" in out
        code, out = await cqrs(app.settings, "webhooks", "redeliver", "--delivery", "msg_999")
        assert (code, out.strip()) == (
            0,
            "0 FAILED deliveries queued again; 0 subscriptions unparked",
        )
        assert await app.pool.fetchval("SELECT parked_at IS NOT NULL FROM webhooks.subscriptions")
        code, out = await cqrs(app.settings, "webhooks", "redeliver", "--subscription", sub.id)
        assert code == 0, out
        assert "1 FAILED deliveries queued again; 1 subscriptions unparked" in out
        got = await r.wait_for(before + 3, timeout=10)
        # the head first (it held the others back), then the other two (other aggregates)
        seqs = [json.loads(q.body)["data"]["sequence"] for q in got[before:]]
        assert seqs[0] == min(seqs) and len(set(seqs)) == 3
        await statuses_become(app, sub.id, ["DELIVERED"] * 3)


async def test_a_slow_or_dead_endpoint_delays_neither_other_subscriptions_nor_projections(
    template_database: str,
) -> None:
    names = ["webhooks:fanout", "webhooks:dispatch", "pg:products"]
    async with (
        Receiver() as dead,
        Receiver() as healthy,
        system(template_database, names, webhooks_timeout_ms=3000) as (app, service),
    ):
        dead.hang()
        await subscribe(service, dead.url("/never"))
        fine = await subscribe(service, healthy.url("/fine"))
        started = time.monotonic()
        ids = await products(service, 5)
        got = await healthy.wait_for(5, timeout=10)
        took = time.monotonic() - started
        assert took < 2.5, f"healthy endpoint waited {took:.2f}s behind a hanging one"
        # its first deliveries (five aggregates: up to five at once), still hanging
        hanging = [q.headers["webhook-id"] for q in await dead.wait_for(1, timeout=5)]
        assert 1 <= len(hanging) <= 5 and len(set(hanging)) == len(hanging)
        assert sorted(verified(fine.secret, q)["data"]["aggregate_id"] for q in got) == sorted(ids)

        async def projected() -> bool:
            n = await app.pool.fetchval("SELECT count(*) FROM read.product_read_model")
            return bool(n == 5)

        await eventually(projected, within=5)


async def test_the_breaker_stops_calls_to_a_dead_host_then_closes_on_a_probe(
    template_database: str,
) -> None:
    overrides: dict[str, Any] = dict(
        gateway_breaker_threshold=2,
        gateway_breaker_ttl_ms=1500,
        webhooks_max_attempts=50,
        webhooks_retry_initial_ms=20,
        webhooks_retry_max_ms=20,
    )
    async with Receiver() as r, system(template_database, **overrides) as (app, service):
        r.status(503)
        await subscribe(service, r.url("/b"))
        await products(service, 2)
        await r.wait_for(2, timeout=10)
        gateway = app.gateway
        assert gateway is not None

        async def opened() -> bool:
            return gateway.breaker_state(r.host_key) == "open"

        await eventually(opened, within=5)
        gauge = REGISTRY.get_sample_value("cqrs_gateway_breaker_state", {"host": r.host_key})
        assert gauge == 2
        await asyncio.sleep(0.8)
        assert len(r.requests) == 2  # open: the dead host costs nothing
        r.healthy()
        await r.wait_for(4, timeout=10)  # the probe after the ttl, then the second event
        assert gateway.breaker_state(r.host_key) == "closed"

        async def all_delivered() -> bool:
            rows = await app.pool.fetch("SELECT status, attempts FROM webhooks.deliveries")
            return [row["status"] for row in rows] == ["DELIVERED", "DELIVERED"]

        await eventually(all_delivered, within=5)
        circuit = REGISTRY.get_sample_value(
            "cqrs_webhook_attempts_total", {"outcome": "circuit_open"}
        )
        assert circuit is not None and circuit >= 1


async def test_timeouts_and_retry_after_are_recorded_on_the_delivery(
    template_database: str,
) -> None:
    async with (
        Receiver() as r,
        system(template_database, webhooks_timeout_ms=300, webhooks_max_attempts=20) as (
            app,
            service,
        ),
    ):
        r.hang()
        sub = await subscribe(service, r.url("/slow"))
        await products(service, 1)

        async def timed_out() -> bool:
            rows = await deliveries(app, sub.id)
            return bool(rows and rows[0]["attempts"] >= 1)

        await eventually(timed_out, within=10)
        row = (await deliveries(app, sub.id))[0]
        assert row["status"] == "PENDING" and row["last_status"] == 0
        assert "timeout" in row["last_error"].lower() or "timed out" in row["last_error"].lower()

        r.too_many("3600")
        await r.wait_for(len(r.requests) + 1, timeout=10)

        async def told_to_wait() -> bool:
            rows = await deliveries(app, sub.id)
            return bool(rows[0]["last_status"] == 429)

        await eventually(told_to_wait, within=5)
        wait = await app.pool.fetchval(
            "SELECT extract(epoch FROM next_attempt_at - now()) FROM webhooks.deliveries"
        )
        assert 3000 < wait <= 3600


async def test_the_dispatcher_is_in_the_projectors_health_report(template_database: str) -> None:
    async with fresh_settings(template_database, **FAST) as s, open_app(s) as app:
        projector = app.projector(["webhooks:dispatch"])
        assert projector.runners == []
        health = ProjectorHealth(
            asyncio.get_running_loop(), app.pool, [], asyncio.Event(), projector.services
        )
        standby = (await health.report()).detail["services"]
        assert standby == {"webhooks:dispatch": {"role": "standby", "state": "standby"}}
        stop = asyncio.Event()
        task = asyncio.create_task(projector.run(stop))
        try:
            (dispatcher,) = projector.services

            async def leading() -> bool:
                return dispatcher.leading

            await eventually(leading, within=5)
            report = await health.report()
            assert report.detail["services"]["webhooks:dispatch"] == {
                "role": "leader",
                "state": "delivering",
            }
        finally:
            stop.set()
            await asyncio.wait_for(task, 10)


async def test_the_fanout_is_a_consumer_in_status_and_not_rebuilt(template_database: str) -> None:
    async with fresh_settings(template_database, **FAST) as s, open_app(s) as app:
        names = app.names()
        assert "webhooks:fanout" in names
        assert "webhooks:fanout" not in [c.name for c in app.select(None)]
        with pytest.raises(ValueError, match="cannot be rebuilt"):
            app.select(["fanout"])
        fanout = app.consumer("webhooks:fanout")
        assert "0 active subscriptions" in await fanout.describe()
