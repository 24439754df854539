"""A consumer whose batch keeps failing while its checkpoint reads fine: the runner backs
off (it used to retry every 50 ms, a WARNING each time), honours the pause a failure asks
for, and reports the stuck backlog as lag (it used to report 0, so no alert could fire).

Real PostgreSQL event log, real runner and lease; the failing side is the payments
process manager with the in-memory provider made unavailable (the port's own fake), and a
consumer whose downstream is a closed TCP port.
"""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
from prometheus_client import REGISTRY

from common import events as ev
from common.payments import Charge, InMemoryPaymentProvider
from projector.bootstrap import App
from projector.outbound import Outbound
from projector.outbox import Batch
from projector.payments.process import PaymentsProcess, WriteSide
from projector.runner import ConsumerRunner
from projector.wakeup import Wakeup
from tests.support.events import Shop

pytestmark = pytest.mark.integration

WATCH_S = 3.0


class _Unreachable(Outbound):
    """Relays orders to a downstream that refuses every connection (a closed port)."""

    def __init__(self, app: App) -> None:
        self._pool = app.pool
        self.calls = 0

    @property
    def name(self) -> str:
        return "test:unreachable"

    @property
    def consumes(self) -> tuple[str, ...]:
        return (ev.ORDER,)

    @property
    def event_types(self) -> None:
        return None

    async def apply(self, batch: Batch) -> None:
        self.calls += 1
        # A real refused connection, the way a relay meets a dead broker.
        _, writer = await asyncio.open_connection("127.0.0.1", 9)
        writer.close()  # pragma: no cover - port 9 (discard) is closed here

    async def describe(self) -> str:
        return "unreachable"


class _CountingProvider(InMemoryPaymentProvider):
    """The in-memory provider, counting the charges asked of it."""

    def __init__(self) -> None:
        super().__init__()
        self.asked = 0

    async def charge(
        self, order_id: str, amount_cents: int, currency: str, idempotency_key: str
    ) -> Charge:
        self.asked += 1
        return await super().charge(order_id, amount_cents, currency, idempotency_key)


async def _order_waiting_for_its_charge(app: App) -> str:
    shop = Shop(app.pool)
    product = await shop.create_product(price_cents=1250, stock=10)
    customer = await shop.create_customer()
    order = await shop.place_order(customer, [(product, 2)])
    await shop.payment(
        order, ev.PAYMENT_REQUESTED, "PENDING", attempt=1, amount_cents=2500, currency="EUR"
    )
    return order


async def _run_for(runner: ConsumerRunner, seconds: float) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    try:
        await asyncio.sleep(seconds)
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


def _lag(name: str) -> float | None:
    return REGISTRY.get_sample_value(
        "cqrs_projection_lag_events", {"projection": name, "segment": ""}
    )


async def test_a_failing_apply_backs_off_and_counts_as_lag(
    app: App, caplog: pytest.LogCaptureFixture
) -> None:
    await _order_waiting_for_its_charge(app)
    consumer = _Unreachable(app)
    runner = app.runner(consumer, Wakeup())
    caplog.set_level(logging.WARNING, logger="projector.runner")
    await _run_for(runner, WATCH_S)
    # Back-off 0.05, 0.1, 0.2, 0.4, 0.8, 1.0 ...: about 7 attempts in 3 s. Without it (the
    # checkpoint read reset the back-off) one every 50 ms: about 60.
    assert 3 <= consumer.calls <= 10, consumer.calls
    warnings = [r for r in caplog.records if "retrying in" in r.getMessage()]
    assert 1 <= len(warnings) <= 2, [r.getMessage() for r in warnings]
    # Measured while it was stuck (the leader dropped its series when it stopped).
    assert runner.lag_events is not None and runner.lag_events >= 1


async def test_payments_wait_as_long_as_the_provider_asks_and_show_the_order_as_lag(
    app: App,
) -> None:
    order = await _order_waiting_for_its_charge(app)
    provider = _CountingProvider()
    provider.fail_next(1000, "circuit open for sandbox: retry in 1.5 s", retry_in_s=1.5)
    # The write side is never reached: nothing gets charged while the provider is down.
    process = PaymentsProcess(app.pool, provider, WriteSide("127.0.0.1:9", None, ()))
    runner = app.runner(process, Wakeup())
    lag_seen: list[float | None] = []
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    started = time.monotonic()
    try:
        while time.monotonic() - started < WATCH_S:
            await asyncio.sleep(0.25)
            lag_seen.append(_lag(process.name))
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
    attempts = provider.asked
    # A try at 0, then not before 1.5 s, then not before 3 s: two or three calls. The old
    # runner called every 50 ms (about 60 in 3 s) and reported a lag of 0 all along.
    assert 1 <= attempts <= 3, attempts
    assert provider.charges_for(order) == []
    assert any(v is not None and v >= 1 for v in lag_seen), lag_seen
