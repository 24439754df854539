"""The dispatcher's order and parking rules against real receivers (issue 21, items 1, 3, 7):
real commands, the real fan-out and dispatcher (``cqrs projector run``'s own objects), real
HTTP to receivers on 127.0.0.1.

- A failing host parks its subscription whatever its breaker does: a failed half-open probe
  is an attempt, and a delivery failing longer than the maximum age parks at its next
  failure, even one the open breaker refused.
- Deliveries overlap across aggregates, up to the subscription's cap, but never within one:
  one aggregate's go strictly one after the other, in log order, even when the table's
  physical order is not the log's (a failed attempt rewrites its row).
"""

from __future__ import annotations

import asyncio
import json
import random
from typing import Any

import pytest

from projector.bootstrap import App
from projector.webhooks.admin import redeliver
from tests.integration.test_webhooks import deliveries, products, subscribe, system
from tests.support.events import eventually
from tests.support.http_receiver import Flap, ReceivedRequest, Receiver, Reply
from write_server.domain import commands
from write_server.service_layer.service import CommandService

pytestmark = pytest.mark.integration


async def parked(app: App, sub_id: str) -> bool:
    value = await app.pool.fetchval(
        "SELECT parked_at IS NOT NULL FROM webhooks.subscriptions WHERE id = $1::uuid", sub_id
    )
    return bool(value)


async def parks_within(app: App, sub_id: str, seconds: float) -> None:
    async def check() -> bool:
        return await parked(app, sub_id)

    await eventually(check, within=seconds)


async def test_a_failing_probe_counts_so_the_subscription_parks(template_database: str) -> None:
    """Before: the call whose attempt opened the breaker, and every failed half-open probe,
    ended with CircuitOpen from the next in-call retry, which the dispatcher did not count:
    the delivery stayed PENDING at 0 attempts for ever."""
    overrides: dict[str, Any] = dict(
        gateway_retry_attempts=3,
        gateway_breaker_threshold=2,
        gateway_breaker_ttl_ms=300,
        webhooks_max_attempts=3,
        webhooks_retry_initial_ms=50,
        webhooks_retry_max_ms=100,
    )
    async with Receiver() as r, system(template_database, **overrides) as (app, service):
        r.status(500, b"broken")
        sub = await subscribe(service, r.url("/down"))
        await products(service, 1)
        await parks_within(app, sub.id, 10)
        (row,) = await deliveries(app, sub.id)
        assert (row["status"], row["attempts"], row["last_status"]) == ("FAILED", 3, 500)
        # 2 requests opened the breaker, then one failed probe per ttl
        assert len(r.requests) == 4


async def test_a_delivery_failing_longer_than_the_max_age_parks(template_database: str) -> None:
    overrides: dict[str, Any] = dict(
        webhooks_max_attempts=1000,
        webhooks_max_age_ms=1000,
        webhooks_retry_initial_ms=50,
        webhooks_retry_max_ms=50,
    )
    async with Receiver() as r, system(template_database, **overrides) as (app, service):
        r.status(500)
        sub = await subscribe(service, r.url("/down"))
        await products(service, 1)
        await parks_within(app, sub.id, 10)
        (row,) = await deliveries(app, sub.id)
        assert row["status"] == "FAILED" and 2 < row["attempts"] < 1000
        assert row["last_error"].startswith("failing for 1 s (max age), last: ")
        assert row["last_error"].endswith("HTTP 500")


async def test_an_aged_delivery_parks_though_the_open_breaker_lets_nothing_through(
    template_database: str,
) -> None:
    """The breaker stays open (a long ttl): the delivery's calls are refused unsent and count
    no attempt. Once it has been failing longer than the max age (its failing clock is set
    back here, as a day passing would) the next refusal parks it."""
    overrides: dict[str, Any] = dict(
        gateway_breaker_threshold=1,
        gateway_breaker_ttl_ms=60_000,
        webhooks_max_attempts=1000,
        webhooks_max_age_ms=60_000,
    )
    async with Receiver() as r, system(template_database, **overrides) as (app, service):
        r.status(500)
        sub = await subscribe(service, r.url("/down"))
        await products(service, 1)

        async def refused_unsent() -> bool:
            rows = await deliveries(app, sub.id)
            return bool(rows) and "circuit open" in rows[0]["last_error"]

        await eventually(refused_unsent, within=10)
        assert not await parked(app, sub.id)
        await app.pool.execute(
            "UPDATE webhooks.deliveries SET failing_since = now() - interval '61 seconds',"
            " next_attempt_at = now() WHERE subscription_id = $1::uuid",
            sub.id,
        )
        await parks_within(app, sub.id, 10)
        (row,) = await deliveries(app, sub.id)
        assert (row["status"], row["attempts"]) == ("FAILED", 1)
        assert row["last_error"].startswith("failing for 61 s (max age), last: circuit open")
        assert len(r.requests) == 1  # the breaker held: nothing more was sent

        # A redelivery starts the failing clock afresh: refused again by the breaker, the
        # delivery now waits (before, with the clock kept, it would park at once again).
        assert (await redeliver(app.pool, sub.id)).deliveries == 1

        async def refused_again() -> bool:
            rows = await deliveries(app, sub.id)
            return rows[0]["status"] == "PENDING" and rows[0]["failing_since"] is not None

        await eventually(refused_again, within=10)
        await asyncio.sleep(0.3)
        assert not await parked(app, sub.id)
        age = await app.pool.fetchval(
            "SELECT extract(epoch FROM now() - failing_since) FROM webhooks.deliveries"
        )
        assert age < 10


class Overlaps:
    """A receiver behaviour: answers 200 after a random 5-40 ms and records, per aggregate,
    whether a request arrived while another of the same aggregate was unanswered, and the
    most requests in flight at once."""

    def __init__(self) -> None:
        self.busy: set[str] = set()
        self.overlapped: list[str] = []
        self.in_flight = 0
        self.most = 0
        self.versions: dict[str, list[int]] = {}
        self._random = random.Random(21)

    async def __call__(self, request: ReceivedRequest) -> Reply:
        data = json.loads(request.body)["data"]
        aggregate = data["aggregate_id"]
        self.versions.setdefault(aggregate, []).append(data["aggregate_version"])
        if aggregate in self.busy:
            self.overlapped.append(aggregate)
        self.busy.add(aggregate)
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        try:
            await asyncio.sleep(self._random.uniform(0.005, 0.04))
        finally:
            self.in_flight -= 1
            self.busy.discard(aggregate)
        return Reply(200, b"ok")


async def updated_in_runs(service: CommandService, aggregates: int, updates: int) -> list[str]:
    """``aggregates`` products, then each one updated ``updates`` times in a row: runs of
    one aggregate's events, which the cap alone would send at once."""
    ids = await products(service, aggregates)
    for pid in ids:
        for n in range(updates):
            await service.execute(commands.UpdateProduct(id=pid, changes={"stock": n}))
    return ids


async def test_aggregates_overlap_up_to_the_cap_but_one_aggregate_never_does(
    template_database: str,
) -> None:
    """72 deliveries of 12 aggregates, all queued before the dispatcher starts: up to six go
    at once, never two of one aggregate, each aggregate's in log order."""
    behaviour = Overlaps()
    async with (
        Receiver() as r,
        system(template_database, ["webhooks:fanout"], webhooks_max_in_flight=6) as (
            app,
            service,
        ),
    ):
        r.set(behaviour)
        sub = await subscribe(service, r.url("/many"))
        ids = await updated_in_runs(service, 12, 5)

        async def queued() -> bool:
            return len(await deliveries(app, sub.id)) == 72

        await eventually(queued, within=10)
        stop = asyncio.Event()
        dispatcher = asyncio.create_task(app.projector(["webhooks:dispatch"]).run(stop))
        try:
            await r.wait_for(72, timeout=30)
            await eventually(lambda: _all_delivered(app, sub.id, 72), within=10)
        finally:
            stop.set()
            await asyncio.wait_for(dispatcher, 10)
    assert behaviour.overlapped == [], "two deliveries of one aggregate were in flight"
    assert behaviour.versions == {a: [1, 2, 3, 4, 5, 6] for a in ids}
    assert 1 < behaviour.most <= 6


async def _all_delivered(app: App, sub_id: str, count: int) -> bool:
    rows = await deliveries(app, sub_id)
    return len(rows) == count and all(row["status"] == "DELIVERED" for row in rows)


async def test_one_aggregate_stays_in_log_order_after_its_head_is_redelivered(
    template_database: str,
) -> None:
    """The queue is read in log order (ORDER BY the delivery id), not in the table's order:
    parking and redelivering the head rewrite its row (a new row version, at the end of the
    table), and a scan without the ORDER BY finds it after the deliveries that follow it,
    which then went first."""
    async with (
        Receiver() as r,
        system(template_database, webhooks_max_attempts=1) as (app, service),
    ):
        r.set(Flap(1, Reply(500, b"once"), Reply(200, b"ok")))
        sub = await subscribe(service, r.url("/one"))
        (pid,) = await products(service, 1)
        for n in range(8):
            await service.execute(commands.UpdateProduct(id=pid, changes={"stock": n}))

        async def parked_with_all_queued() -> bool:
            return len(await deliveries(app, sub.id)) == 9 and await parked(app, sub.id)

        await eventually(parked_with_all_queued, within=10)
        assert [row["status"] for row in await deliveries(app, sub.id)] == ["FAILED"] + [
            "PENDING"
        ] * 8
        assert (await redeliver(app.pool, sub.id)).deliveries == 1
        await r.wait_for(10, timeout=15)
        await eventually(lambda: _all_delivered(app, sub.id, 9), within=10)
    versions = [json.loads(q.body)["data"]["aggregate_version"] for q in r.requests]
    assert versions == [1, 1, 2, 3, 4, 5, 6, 7, 8, 9], versions
