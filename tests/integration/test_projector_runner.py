"""Runners against real PostgreSQL and Redis: ordering, crashes, leadership, poison events."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import os
import signal
import sys
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg
import pytest
from prometheus_client import REGISTRY

from common import events as ev
from common.pb.shop.v1 import shop_pb2
from common.positions import Position
from projector import status as status_module
from projector.bootstrap import App
from projector.projections import ALL_PROJECTIONS
from projector.runner import ConsumerRunner, Outcome
from projector.snapshots import SnapshotWriter
from projector.wakeup import Wakeup
from tests.support.events import (
    NewEvent,
    Shop,
    append_events,
    append_poison_update,
    eventually,
    now,
)
from tests.support.projector import (
    RecordingStore,
    applied_total,
    applied_up_to_now,
    assert_chained,
    build_while_empty,
    last_event,
    make_runner,
    projection,
    some_history,
    verify_quietly,
    wait_applied,
)

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


async def test_every_projection_follows_the_log_and_verifies(app: App) -> None:
    shop = Shop(app.pool)
    await some_history(shop)
    stop = asyncio.Event()
    run = asyncio.create_task(app.projector().run(stop))
    try:
        await wait_applied(app)
        differences, report = await verify_quietly(app)
        assert differences == 0, report
        out = io.StringIO()
        assert await status_module.status(app.consumers, app.pool, app.failures, out=out) == 0
        # six + pg:analytics + webhooks:fanout + pg:snapshots, each led by this process
        assert out.getvalue().count(" ok") == len(app.consumers) == 9
        assert out.getvalue().count(f"/{os.getpid()} ") == 9, out.getvalue()
    finally:
        stop.set()
        outcomes = await asyncio.wait_for(run, 10)
    assert set(outcomes.values()) == {Outcome.STOPPED}


async def test_an_open_transaction_with_a_lower_seq_is_never_skipped(
    app: App,
) -> None:
    """(a) Gap safety: events committed later but with a lower xid are applied, once."""
    log: list[tuple[str, Position, Position]] = []
    store = RecordingStore(projection(app, "pg:products").store, log)
    runner = make_runner(app, "pg:products", Wakeup(), store=store)
    before = applied_total("pg:products")
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    shop = Shop(app.pool)
    try:
        first = await shop.create_product()
        await wait_applied(app, ["pg:products"])

        slow_id = str(uuid.uuid4())
        async with app.pool.acquire() as slow:
            tx = slow.transaction()
            await tx.start()
            (slow_position,) = await append_events(
                slow,
                [
                    NewEvent(
                        ev.PRODUCT,
                        slow_id,
                        1,
                        ev.PRODUCT_CREATED,
                        {
                            "name": "slow",
                            "description": "",
                            "price_cents": 1,
                            "currency": "EUR",
                            "category": "",
                            "stock": 1,
                        },
                        now(),
                    )
                ],
            )
            later = [await shop.create_product() for _ in range(3)]
            await asyncio.sleep(1.0)  # several polls (200 ms) while the slow one is open
            checkpoint = await store.checkpoint()
            assert checkpoint < slow_position, "moved past an uncommitted event"
            docs = await store.all_documents()
            assert set(docs) == {first}, "a later event was applied before an earlier one"
            await tx.commit()

        await wait_applied(app, ["pg:products"])
        assert set(await store.all_documents()) == {first, slow_id, *later}
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
    assert_chained(log)
    assert applied_total("pg:products") - before == 5  # each event applied exactly once


async def test_restart_after_the_runner_task_is_killed(app: App) -> None:
    """(b) Cancel a runner mid-way, start a new one: every event applied exactly once."""
    settings = dataclasses.replace(app.settings, projector_batch_size=3)
    res = dataclasses.replace(app, settings=settings)
    name = "redis:orders"
    built_at = await build_while_empty(app, name)  # the runners follow a live projection
    await some_history(Shop(app.pool), size=4)
    total = int(await app.pool.fetchval("SELECT count(*) FROM events"))
    log: list[tuple[str, Position, Position]] = []
    before = applied_total(name)
    for attempt in ("first", "second"):
        store = RecordingStore(projection(res, name).store, log, attempt)
        store.delay = 0.02 if attempt == "first" else 0.0
        stop = asyncio.Event()
        task = asyncio.create_task(make_runner(res, name, Wakeup(), store=store).run(stop))
        if attempt == "first":

            async def two_commits() -> bool:
                return len(log) >= 2

            await eventually(two_commits, within=10, interval=0.005)
            task.cancel()  # dies between (or during) batches
            with pytest.raises(asyncio.CancelledError):
                await asyncio.wait_for(task, 10)
            assert await store.checkpoint() < await last_event(app), "not mid-way"
        else:
            await wait_applied(res, [name])
            stop.set()
            await asyncio.wait_for(task, 10)
    assert {tag for tag, _, _ in log} == {"first", "second"}
    assert_chained(log, built_at)
    order_events = await app.pool.fetchval(
        "SELECT count(*) FROM events WHERE aggregate_type = ANY($1)", ["Order", "Customer"]
    )
    assert applied_total(name) - before == order_events
    assert order_events < total  # products were filtered out
    _, report = await verify_quietly(app)  # only this projection ran
    assert _differences_of(report, name) == 0, report


def _differences_of(report: str, projection: str) -> int:
    line = next(x for x in report.splitlines() if x.startswith(f"{projection}: "))
    return int(line.rsplit(", ", 1)[1].split()[0])


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
async def test_sigkilled_projector_process_restarts_cleanly(app: App) -> None:
    """(b) SIGKILL a `cqrs projector run` process mid-way; a new projector finishes the job."""
    for name in ALL_PROJECTIONS:
        await build_while_empty(app, name)
    await some_history(Shop(app.pool), size=10)
    settings = app.settings
    env = {
        **os.environ,
        "CQRS_DATABASE_URL": settings.database_url,
        "CQRS_REDIS_URL": settings.redis_url,
        "CQRS_REDIS_PREFIX": settings.redis_prefix,
        "CQRS_PROJECTOR_BATCH_SIZE": "1",
        "CQRS_PROJECTOR_POLL_INTERVAL_MS": "100",
        "CQRS_PROJECTOR_METRICS_PORT": "0",
        "CQRS_LOG_LEVEL": "WARNING",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "cqrs",
        "projector",
        "run",
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        store = projection(app, "pg:orders").store

        async def started() -> bool:
            return (await store.checkpoint()).seq > 0  # an event was applied

        await eventually(started, within=30, interval=0.01)
        proc.send_signal(signal.SIGKILL)
        await asyncio.wait_for(proc.wait(), 10)
        behind = [p for p in ALL_PROJECTIONS if not await applied_up_to_now(app, p)]
        assert behind, "the process finished before it was killed; make the log longer"
    finally:
        if proc.returncode is None:
            proc.kill()
            await asyncio.wait_for(proc.wait(), 10)

    stop = asyncio.Event()
    run = asyncio.create_task(app.projector().run(stop))
    try:
        await wait_applied(app, within=30)
        differences, report = await verify_quietly(app)
        assert differences == 0, report
    finally:
        stop.set()
        await asyncio.wait_for(run, 10)


async def test_hot_standby_takes_over_when_the_leader_dies(app: App) -> None:
    """(c) Two runners: one leads, the other waits; when the leader dies the standby leads."""
    name = "pg:customers"
    log: list[tuple[str, Position, Position]] = []
    runners: dict[str, ConsumerRunner] = {}
    tasks: dict[str, asyncio.Task[Outcome]] = {}
    stop = asyncio.Event()
    shop = Shop(app.pool)
    for tag in ("a", "b"):
        store = RecordingStore(projection(app, name).store, log, tag)
        runners[tag] = make_runner(app, name, Wakeup(), store=store)
        tasks[tag] = asyncio.create_task(runners[tag].run(stop))
        await asyncio.sleep(0.3)  # "a" surely leads
    try:
        await shop.create_customer()
        await wait_applied(app, [name])
        assert {tag for tag, _, _ in log} == {"a"}

        tasks["a"].cancel()  # the leader dies
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(tasks["a"], 10)
        await shop.create_customer()
        await wait_applied(app, [name])
        assert log[-1][0] == "b"

        # The new leader's lock session dies: it stands by and leads again.
        pid = runners["b"]._lease.backend_pid
        await app.pool.execute("SELECT pg_terminate_backend($1)", pid)
        await shop.create_customer()
        await wait_applied(app, [name])
        assert runners["b"]._lease.backend_pid != pid
    finally:
        stop.set()
        await asyncio.wait_for(tasks["b"], 10)
    assert_chained(log)
    assert len(await projection(app, name).store.all_documents()) == 3


async def test_poison_event_stops_only_its_projection(app: App) -> None:
    """(d) A poison event stops products (recorded, gauge 1); customers and orders go on;
    once the cause is fixed a restart recovers and clears the record."""
    shop = Shop(app.pool)
    product = await shop.create_product()
    good = await shop.create_product()
    poison_seq = await _poison_product_update(app, product)
    customer = await shop.create_customer()
    await shop.place_order(customer, [(good, 1)])
    await shop.update_product(good, name="after the poison")

    stop = asyncio.Event()
    run = asyncio.create_task(app.projector().run(stop))
    try:
        others = [p for p in ALL_PROJECTIONS if not p.endswith(":products")]
        await wait_applied(app, others)
        failures = await app.failures.all()

        async def both_failed() -> bool:
            nonlocal failures
            failures = await app.failures.all()
            return set(failures) == {"redis:products", "pg:products"}

        await eventually(both_failed)
        assert {f.event_seq for f in failures.values()} == {poison_seq}
        for name in ("redis:products", "pg:products"):
            assert _gauge("cqrs_projection_failed", name) == 1
            docs = await projection(app, name).store.all_documents()
            assert set(docs) == {product, good}  # everything before the poison event
            good_doc = docs[good]
            assert isinstance(good_doc, shop_pb2.Product)
            assert good_doc.version == 1  # nothing after it
        out = io.StringIO()
        assert await status_module.status(app.consumers, app.pool, app.failures, out=out) == 1
        assert out.getvalue().count("STOPPED at event seq=") == 2
        await shop.create_customer()
        await wait_applied(app, others)  # still running
    finally:
        stop.set()
        outcomes = await asyncio.wait_for(run, 10)
    assert outcomes["pg:products"] is Outcome.FAILED
    assert outcomes["pg:customers"] is Outcome.STOPPED

    # Fix the cause (here: the payload) and restart.
    await app.pool.execute(
        'UPDATE events SET payload = \'{"changes": {"stock": 7}}\' WHERE seq = $1', poison_seq
    )
    await app.pool.execute("UPDATE products SET stock = 7 WHERE id = $1", uuid.UUID(product))
    stop = asyncio.Event()
    run = asyncio.create_task(app.projector().run(stop))
    try:
        await wait_applied(app)
        await eventually(_no_failures(app))
        for name in ("redis:products", "pg:products"):
            assert _gauge("cqrs_projection_failed", name) == 0
        differences, report = await verify_quietly(app)
        assert differences == 0, report
    finally:
        stop.set()
        await asyncio.wait_for(run, 10)


def _no_failures(app: App) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return not await app.failures.all()

    return check


async def _poison_product_update(app: App, product_id: str) -> int:
    async with app.pool.acquire() as conn, conn.transaction():
        return await append_poison_update(conn, product_id)


def _gauge(metric: str, projection: str) -> float | None:
    return REGISTRY.get_sample_value(metric, {"projection": projection, "segment": ""})


async def test_notify_wakes_runners_before_the_poll_interval(app: App) -> None:
    settings = dataclasses.replace(app.settings, projector_poll_interval_ms=5000)
    res = dataclasses.replace(app, settings=settings)
    projector = res.projector(["pg:customers"])
    stop = asyncio.Event()
    run = asyncio.create_task(projector.run(stop))
    shop = Shop(app.pool)
    try:
        await asyncio.wait_for(projector.listener.connected.wait(), 10)
        await asyncio.sleep(0.3)  # the runner is now asleep for 5 s
        loop = asyncio.get_running_loop()
        started = loop.time()
        await shop.create_customer()
        await wait_applied(app, ["pg:customers"], within=4)
        assert loop.time() - started < 2.5
    finally:
        stop.set()
        await asyncio.wait_for(run, 10)


async def test_a_notify_held_back_by_an_older_transaction_is_read_soon_after(app: App) -> None:
    """A NOTIFY whose event is above the horizon, held there by an older transaction that
    sends no NOTIFY when it ends (another database's, a read model's write): the runner looks
    again soon after, not a whole poll interval (5 s here) later."""
    settings = dataclasses.replace(app.settings, projector_poll_interval_ms=5000)
    projector = dataclasses.replace(app, settings=settings).projector(["pg:customers"])
    stop = asyncio.Event()
    run = asyncio.create_task(projector.run(stop))
    shop = Shop(app.pool)
    holder = await asyncpg.connect(app.settings.asyncpg_dsn)
    try:
        await asyncio.wait_for(projector.listener.connected.wait(), 10)
        await asyncio.sleep(0.3)  # the runner is now asleep for 5 s
        older = holder.transaction()
        await older.start()
        await holder.fetchval("SELECT pg_current_xact_id()")  # an xid: holds the horizon
        await shop.create_customer()  # commits and notifies, above the horizon
        await asyncio.sleep(0.5)  # the runner woke and read nothing new
        loop = asyncio.get_running_loop()
        released = loop.time()
        await older.rollback()  # no NOTIFY
        await wait_applied(app, ["pg:customers"], within=4)
        assert loop.time() - released < 1.5
    finally:
        await holder.close()
        stop.set()
        await asyncio.wait_for(run, 10)


async def test_a_dead_listen_connection_stalls_nothing(app: App) -> None:
    projector = app.projector(["redis:customers"])
    stop = asyncio.Event()
    run = asyncio.create_task(projector.run(stop))
    shop = Shop(app.pool)
    try:
        await asyncio.wait_for(projector.listener.connected.wait(), 10)
        dbname = app.settings.asyncpg_dsn.rsplit("/", 1)[1]
        killed = await app.pool.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = $1 AND application_name = 'cqrs-projector-listen'",
            dbname,
        )
        assert killed == 1
        await shop.create_customer()
        await wait_applied(app, ["redis:customers"], within=5)  # polling
        await asyncio.wait_for(projector.listener.connected.wait(), 10)  # reconnected
    finally:
        stop.set()
        await asyncio.wait_for(run, 10)


def _batches(name: str) -> float:
    return _gauge("cqrs_projection_batch_events_count", name) or 0.0


async def test_a_lingering_consumer_takes_a_stream_of_commands_in_few_batches(app: App) -> None:
    """``pg:snapshots`` lingers after a batch (no token read waits on it): commands 30 ms
    apart reach it in about one batch per linger, while ``pg:customers``, which token reads
    wait on, applies them as they come."""
    names = ["pg:customers", "pg:snapshots"]
    projector = app.projector(names)
    stop = asyncio.Event()
    run = asyncio.create_task(projector.run(stop))
    shop = Shop(app.pool)
    try:
        await asyncio.wait_for(projector.listener.connected.wait(), 10)
        await wait_applied(app, names)
        before = {name: _batches(name) for name in names}
        started = asyncio.get_running_loop().time()
        for _ in range(30):
            await shop.create_customer()
            await asyncio.sleep(0.03)
        span = asyncio.get_running_loop().time() - started
        await wait_applied(app, names, within=10)
        took = {name: _batches(name) - before[name] for name in names}
        # One batch per linger over the span, and a few more for where they fell: far fewer
        # than the consumer that takes them as they come.
        assert SnapshotWriter.linger_s > 0
        most = int(span / SnapshotWriter.linger_s) + 3
        assert took["pg:snapshots"] <= most < took["pg:customers"], (took, span, most)
    finally:
        stop.set()
        await asyncio.wait_for(run, 10)
