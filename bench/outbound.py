"""Outbound consumers under load: webhook deliveries and payment captures.

Each scenario runs real processes on a scratch database of its own (migrated, an empty log:
the system under test is left alone): a write server and ``cqrs projector run --only ...``
for just the consumers measured, every setting at its default but the database, the ports,
``CQRS_WEBHOOKS_ALLOW_PRIVATE`` (the receivers are on 127.0.0.1) and ``CQRS_PAYMENTS_URL``.
The webhook receivers (:mod:`bench.receiver`) run in this process; payments go to a ``cqrs
payments-sandbox`` process. Receivers and sandbox answer after :data:`LATENCY_S`.

- ``webhooks``: one subscription; ``CreateProduct`` at :data:`WEBHOOK_RATE` per second for
  the duration (one event each, an aggregate of its own). Lag: from a command's reply to its
  delivery's arrival. Then the same again with two more subscriptions beside it, a slow
  receiver (:data:`SLOW_S` per answer) and a dead one (holds every request unanswered): the
  healthy subscription's p99 lag beside them minus its p99 alone is the delay they cause.
- ``payments``: orders placed, then confirmed all at once (a backlog): captures per second
  from the first ``PaymentRequested`` to the last ``PaymentCaptured`` (the event log's
  clock), and each order's confirm-to-capture time.

Targets (issue 21): the subscription keeps up with 500 events/s (lag below 2 s), slow and
dead neighbours delay it by at most 1 s at p99, payments capture at least 100 orders/s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import grpc
import orjson
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench import processes
from bench.catalogue import ROOT
from bench.receiver import Receiver
from bench.report import percentile
from common.db import drop_database, migrate, split_database
from common.pb.shop.v1 import command_service_pb2 as cpb
from common.pb.shop.v1 import command_service_pb2_grpc as cpb_grpc
from common.settings import Settings, load_settings, to_environ

LATENCY_S = 0.05
WEBHOOK_RATE = 500.0
SLOW_S = 3.0
PAYMENT_ORDERS_PER_S = 150  # orders per second of --duration (at least MIN_ORDERS)
MIN_ORDERS = 100
DEFAULT_SECONDS = 8.0
# The targets.
TARGET_EVENTS_S = 500.0
TARGET_LAG_S = 2.0
TARGET_DELAY_S = 1.0
TARGET_CAPTURES_S = 100.0
_WARM_UP = 20
_DRAIN_S = 60.0
_START_S = 60.0
_CONCURRENCY = 64  # commands in flight while setting up and confirming
_POOL_SIZE = 4  # each process's PostgreSQL pool

A = TypeVar("A")
T = TypeVar("T")


async def measure(settings: Settings, name: str, seconds: float, logs: Path) -> dict[str, Any]:
    """Scenario ``name`` (``webhooks`` or ``payments``) for ``seconds`` of load."""
    if name == "webhooks":
        return await measure_webhooks(settings, seconds, logs)
    if name == "payments":
        return await measure_payments(settings, seconds, logs)
    raise ValueError(f"unknown outbound scenario {name!r}")


# -- webhooks ----------------------------------------------------------------------------


async def measure_webhooks(settings: Settings, seconds: float, logs: Path) -> dict[str, Any]:
    """One subscription at :data:`WEBHOOK_RATE`, alone, then beside a slow and a dead one."""
    no_payments = dataclasses.replace(settings, payments_url="")
    async with (
        Receiver(LATENCY_S) as healthy,
        Receiver(SLOW_S) as slow,
        Receiver(None) as dead,
        _system(no_payments, ["webhooks:fanout", "webhooks:dispatch"], logs) as running,
    ):
        stub = running.commands
        await stub.CreateWebhookSubscription(
            cpb.CreateWebhookSubscriptionRequest(url=healthy.url, description="bench healthy")
        )
        warm = await _products(stub, _WARM_UP, 0.0)
        await _delivered(running, healthy, 0, warm, _START_S)
        alone = await _webhook_phase(running, healthy, seconds)
        _say(f"  webhooks alone: {_shown(alone)}")
        for receiver, what in ((slow, "slow"), (dead, "dead")):
            await stub.CreateWebhookSubscription(
                cpb.CreateWebhookSubscriptionRequest(url=receiver.url, description=f"bench {what}")
            )
        beside = await _webhook_phase(running, healthy, seconds)
        beside["slow_requests"] = len(slow.arrivals)
        beside["dead_requests"] = len(dead.arrivals)
        _say(f"  webhooks beside a slow and a dead receiver: {_shown(beside)}")
    delay_ms = beside["lag_p99_ms"] - alone["lag_p99_ms"]
    return {
        "rate": WEBHOOK_RATE,
        "seconds": seconds,
        "latency_ms": LATENCY_S * 1000,
        "slow_ms": SLOW_S * 1000,
        "alone": alone,
        "beside_slow_and_dead": beside,
        "delay_p99_ms": delay_ms,
        "keeps_up": alone["delivered_per_s"] >= TARGET_EVENTS_S * 0.95
        and alone["missing"] == 0
        and alone["lag_max_ms"] < TARGET_LAG_S * 1000,
        "isolated": beside["missing"] == 0 and delay_ms <= TARGET_DELAY_S * 1000,
    }


async def _webhook_phase(running: _Running, healthy: Receiver, seconds: float) -> dict[str, Any]:
    """``CreateProduct`` at :data:`WEBHOOK_RATE` for ``seconds``; the healthy receiver's lag."""
    since = len(healthy.arrivals)
    started = time.monotonic()
    replied = await _products(running.commands, round(WEBHOOK_RATE * seconds), WEBHOOK_RATE)
    sent_s = time.monotonic() - started
    arrived = await _delivered(running, healthy, since, replied, _DRAIN_S)
    lags = sorted(arrived[i] - replied[i] for i in arrived)
    last = max(arrived.values(), default=started)
    return {
        "commands": len(replied),
        "command_rate": len(replied) / sent_s if sent_s else 0.0,
        "delivered": len(arrived),
        "missing": len(replied) - len(arrived),
        "delivered_per_s": len(arrived) / (last - started) if last > started else 0.0,
        **_latencies("lag", lags),
    }


async def _delivered(
    running: _Running, receiver: Receiver, since: int, replied: dict[str, float], within: float
) -> dict[str, float]:
    """Until every product of ``replied`` has arrived at ``receiver`` (or ``within`` passed):
    each one's first arrival (monotonic)."""
    deadline = time.monotonic() + within
    first: dict[str, float] = {}
    seen = since
    while len(first) < len(replied) and time.monotonic() < deadline:
        running.check()
        for arrival in receiver.arrivals[seen:]:
            aggregate = orjson.loads(arrival.body)["data"]["aggregate_id"]
            if aggregate in replied:
                first.setdefault(aggregate, arrival.at)
        seen = len(receiver.arrivals)
        await asyncio.sleep(0.05)
    return first


async def _products(stub: cpb_grpc.CommandServiceStub, count: int, rate: float) -> dict[str, float]:
    """``count`` CreateProduct commands, at ``rate`` per second (0: as fast as they go):
    each product's id and its reply's time (monotonic)."""
    replied: dict[str, float] = {}

    async def one(n: int) -> None:
        request = cpb.CreateProductRequest(
            name=f"outbound {n}", price_cents=100, currency="EUR", stock=1
        )
        reply = await stub.CreateProduct(request, timeout=30)
        replied[reply.id] = time.monotonic()

    if rate <= 0:
        await _each(one, range(count))
        return replied
    # At most _CONCURRENCY in flight: a write server that falls behind lowers the rate
    # achieved (reported) instead of piling up calls it would refuse.
    slots = asyncio.Semaphore(_CONCURRENCY)

    async def paced(n: int) -> None:
        try:
            await one(n)
        finally:
            slots.release()

    started = time.monotonic()
    tasks: list[asyncio.Task[None]] = []
    for n in range(count):
        await asyncio.sleep(max(0.0, started + n / rate - time.monotonic()))
        await slots.acquire()
        tasks.append(asyncio.create_task(paced(n)))
    await asyncio.gather(*tasks)
    return replied


def _shown(phase: dict[str, Any]) -> str:
    return (
        f"{phase['delivered_per_s']:,.0f} deliveries/s, lag p50 {phase['lag_p50_ms']:.0f} / "
        f"p99 {phase['lag_p99_ms']:.0f} / max {phase['lag_max_ms']:.0f} ms, "
        f"{phase['missing']} missing"
    )


# -- payments ----------------------------------------------------------------------------


async def measure_payments(settings: Settings, seconds: float, logs: Path) -> dict[str, Any]:
    """Orders confirmed all at once against a sandbox answering after :data:`LATENCY_S`."""
    orders = max(MIN_ORDERS, round(PAYMENT_ORDERS_PER_S * seconds))
    async with _sandbox(logs) as url:
        with_payments = dataclasses.replace(settings, payments_url=url)
        async with _system(with_payments, ["payments:process"], logs) as running:
            stub = running.commands
            ids = await _placed_orders(stub, orders)
            started = time.monotonic()

            async def confirm(order: str) -> None:
                await stub.ConfirmOrder(cpb.ConfirmOrderRequest(id=order), timeout=30)

            await _each(confirm, ids)
            confirmed_s = time.monotonic() - started
            captured = await _captured(running, _scratch_dsn(settings), ids, _DRAIN_S)
            figures = await _payment_figures(_scratch_dsn(settings), ids)
    result = {
        "orders": orders,
        "latency_ms": LATENCY_S * 1000,
        "confirm_s": confirmed_s,
        "captured": captured,
        **figures,
    }
    _say(
        f"  payments: {result['captures_per_s']:,.0f} captures/s, confirm to capture p50 "
        f"{result['capture_p50_ms']:.0f} / p99 {result['capture_p99_ms']:.0f} ms"
    )
    return result


async def _placed_orders(stub: cpb_grpc.CommandServiceStub, count: int) -> list[str]:
    """``count`` orders of a few customers and products (spread: the write side locks
    each aggregate a command touches)."""
    spread = min(32, count)

    async def customer(n: int) -> str:
        request = cpb.CreateCustomerRequest(name=f"c{n}", email=f"c{n}@bench.example")
        return str((await stub.CreateCustomer(request, timeout=30)).id)

    async def product(n: int) -> str:
        request = cpb.CreateProductRequest(
            name=f"p{n}", price_cents=1250, currency="EUR", stock=1_000_000
        )
        return str((await stub.CreateProduct(request, timeout=30)).id)

    customers = await _each(customer, range(spread))
    products = await _each(product, range(spread))

    async def order(n: int) -> str:
        item = cpb.PlaceOrderRequest.Item(product_id=products[n % spread], quantity=1)
        request = cpb.PlaceOrderRequest(customer_id=customers[n % spread], items=[item])
        return str((await stub.PlaceOrder(request, timeout=30)).id)

    return await _each(order, range(count))


async def _captured(running: _Running, dsn: str, ids: list[str], within: float) -> int:
    """Until every order of ``ids`` is CAPTURED (or ``within`` passed): how many are."""
    conn = await asyncpg.connect(dsn)
    try:
        deadline = time.monotonic() + within
        while True:
            done = int(
                await conn.fetchval(
                    "SELECT count(*) FROM orders WHERE id = ANY($1::uuid[])"
                    " AND payment_status = 'CAPTURED'",
                    ids,
                )
            )
            if done == len(ids) or time.monotonic() > deadline:
                return done
            running.check()
            await asyncio.sleep(0.1)
    finally:
        await conn.close()


async def _payment_figures(dsn: str, ids: list[str]) -> dict[str, float]:
    """From the event log: captures/s (first PaymentRequested to last PaymentCaptured) and
    each order's PaymentRequested -> PaymentCaptured time."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            """SELECT aggregate_id,
                      min(occurred_at) FILTER (WHERE event_type = 'PaymentRequested') AS asked,
                      min(occurred_at) FILTER (WHERE event_type = 'PaymentCaptured') AS paid
               FROM events WHERE aggregate_id = ANY($1::uuid[])
               GROUP BY aggregate_id""",
            ids,
        )
    finally:
        await conn.close()
    paid = [r for r in rows if r["asked"] is not None and r["paid"] is not None]
    if not paid:
        return {"captures_per_s": 0.0, **_latencies("capture", [])}
    span = (max(r["paid"] for r in paid) - min(r["asked"] for r in paid)).total_seconds()
    waits = sorted((r["paid"] - r["asked"]).total_seconds() for r in paid)
    return {
        "captures_per_s": len(paid) / span if span > 0 else 0.0,
        **_latencies("capture", waits),
    }


# -- the processes -----------------------------------------------------------------------


def _scratch_dsn(settings: Settings) -> str:
    return _scratch(settings).asyncpg_dsn


def _scratch(settings: Settings) -> Settings:
    """``settings`` on the scratch database; everything else the caller's, but what would
    make the processes need credentials this benchmark does not have."""
    _, name = split_database(settings.asyncpg_dsn)
    base = settings.database_url.rsplit("/", 1)[0]
    defaults = Settings()
    return dataclasses.replace(
        settings,
        database_url=f"{base}/{name}_bench_outbound",
        write_tokens="", write_tokens_file="", read_tokens="", read_tokens_file="",
        tls_cert="", tls_key="", tls_client_ca="", tls_ca="", tls_client_cert="",
        tls_client_key="", client_token="", nats_url="",
        redis_prefix=f"bench-outbound-{uuid.uuid4().hex[:8]}",
        write_host="127.0.0.1",
        write_metrics_port=0, read_metrics_port=0, projector_metrics_port=0,
        webhooks_allow_private=True,
        log_level="WARNING",
        # Beside the system under test on a shared PostgreSQL: small pools (measured: as
        # fast as 10 here, the dispatcher and the write server hold a connection briefly).
        db_pool_size=min(settings.db_pool_size, _POOL_SIZE),
        write_address=defaults.write_address,
    )  # fmt: skip


class _Running:
    """A scenario's processes and a channel to its write server; :meth:`check` fails the
    scenario when a process died (instead of waiting for what it will never do)."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.started: list[asyncio.subprocess.Process] = []
        self.channel: grpc.aio.Channel | None = None

    @property
    def commands(self) -> cpb_grpc.CommandServiceStub:
        assert self.channel is not None
        return cpb_grpc.CommandServiceStub(self.channel)

    def check(self) -> None:
        for process in self.started:
            if process.returncode is not None:
                raise SystemExit(
                    f"cqrs bench: a process of the outbound scenario exited with "
                    f"{process.returncode} (logs in {self.logs})"
                )


@contextlib.asynccontextmanager
async def _system(settings: Settings, consumers: list[str], logs: Path) -> AsyncIterator[_Running]:
    """A scratch database, a write server and ``cqrs projector run --only consumers`` on
    it. Everything is gone afterwards."""
    scratch = dataclasses.replace(_scratch(settings), write_port=processes.free_port())
    await drop_database(scratch.asyncpg_dsn)
    await migrate(scratch.asyncpg_dsn, scratch.sqlalchemy_url)
    env = {**os.environ, **to_environ(scratch), "PYTHONPATH": str(ROOT)}
    only = [arg for name in consumers for arg in ("--only", name)]
    running = _Running(logs)
    started = running.started
    try:
        started.append(await _spawn(["write-server"], env, logs / "outbound-write.log"))
        address = f"127.0.0.1:{scratch.write_port}"
        await _serving(address, started[0])
        started.append(
            await _spawn(["projector", "run", *only], env, logs / "outbound-projector.log")
        )
        async with grpc.aio.insecure_channel(address) as channel:
            running.channel = channel
            yield running
    finally:
        for process in reversed(started):
            await _stop(process)
        await drop_database(scratch.asyncpg_dsn)


@contextlib.asynccontextmanager
async def _sandbox(logs: Path) -> AsyncIterator[str]:
    """A ``cqrs payments-sandbox`` answering after :data:`LATENCY_S`; yields its URL."""
    port = processes.free_port()
    latency = f"{LATENCY_S * 1000:g}"
    process = await _spawn(
        ["payments-sandbox", "--port", str(port), "--latency-ms", latency],
        {**os.environ, "PYTHONPATH": str(ROOT), "CQRS_LOG_LEVEL": "WARNING"},
        logs / "outbound-sandbox.log",
    )
    try:
        deadline = time.monotonic() + _START_S
        while True:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                break
            except OSError:
                if process.returncode is not None or time.monotonic() > deadline:
                    raise SystemExit(f"the payments sandbox did not start (see {logs})") from None
                await asyncio.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        await _stop(process)


async def _spawn(args: list[str], env: dict[str, str], log: Path) -> asyncio.subprocess.Process:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as output:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "cqrs", *args, env=env, cwd=ROOT,
            stdout=output, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip


async def _serving(address: str, process: asyncio.subprocess.Process) -> None:
    deadline = time.monotonic() + _START_S
    async with grpc.aio.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while True:
            with contextlib.suppress(grpc.aio.AioRpcError):
                reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            if process.returncode is not None or time.monotonic() > deadline:
                raise SystemExit(f"the write server at {address} did not start")
            await asyncio.sleep(0.1)


async def _stop(process: asyncio.subprocess.Process) -> None:
    """SIGTERM, then SIGKILL after 20 s."""
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(20):
                await process.wait()
        except TimeoutError:
            process.kill()
            await process.wait()


# -- helpers -----------------------------------------------------------------------------


async def _each(call: Callable[[A], Awaitable[T]], items: Iterable[A]) -> list[T]:
    """``call`` on every item, at most :data:`_CONCURRENCY` at once; the results in order."""
    slots = asyncio.Semaphore(_CONCURRENCY)

    async def one(item: A) -> T:
        async with slots:
            return await call(item)

    return list(await asyncio.gather(*(one(item) for item in items)))


def _latencies(prefix: str, seconds: list[float]) -> dict[str, float]:
    ordered = sorted(int(s * 1e9) for s in seconds)
    return {
        f"{prefix}_p50_ms": percentile(ordered, 50) / 1e6,
        f"{prefix}_p99_ms": percentile(ordered, 99) / 1e6,
        f"{prefix}_max_ms": (ordered[-1] if ordered else 0) / 1e6,
    }


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("scenarios", nargs="*", default=["webhooks", "payments"])
    parser.add_argument("--seconds", type=float, default=DEFAULT_SECONDS)
    parser.add_argument("--logs", type=Path, default=Path("bench/results/outbound-logs"))
    args = parser.parse_args()
    settings = load_settings()
    for name in args.scenarios:
        result = asyncio.run(measure(settings, name, args.seconds, args.logs))
        print(json.dumps({name: result}, indent=2))


if __name__ == "__main__":
    main()
