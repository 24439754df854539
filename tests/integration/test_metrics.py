"""The metrics the processes export, read from the real registry (or a real scrape) while
real runners, rebuilds and pools work on PostgreSQL and Redis: lag in seconds from
``recorded_at``, batch and freshness histograms, rebuild progress, the lease holder, the
write server's outbox backlog and the pool gauges."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from common import events as ev
from common.settings import Settings
from projector import rebuild as rebuilding
from projector.bootstrap import App
from projector.errors import StoreLost
from projector.wakeup import Wakeup
from read_server.bootstrap import bootstrap as bootstrap_read
from tests.support.env import one_redis_only
from tests.support.events import NewEvent, Shop, append_events, eventually, now
from tests.support.projector import (
    RecordingStore,
    build_while_empty,
    make_runner,
    projection,
    wait_applied,
)
from tests.support.scrape import scrape
from tests.support.servers import env_for, free_port, start
from write_server.bootstrap import bootstrap as bootstrap_write
from write_server.bootstrap import command_service
from write_server.domain import commands

pytestmark = pytest.mark.integration


def value(metric: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(metric, labels)


def of(metric: str, projection: str) -> float:
    return value(metric, projection=projection, segment="") or 0.0


def product_created(name: str, occurred_days_ago: int) -> NewEvent:
    payload = {
        "name": name,
        "description": "",
        "price_cents": 1,
        "currency": "EUR",
        "category": "",
        "stock": 1,
    }
    at = now() - timedelta(days=occurred_days_ago)
    return NewEvent(ev.PRODUCT, str(uuid.uuid4()), 1, ev.PRODUCT_CREATED, payload, at)


async def watch_max(read: Callable[[], float], until: Awaitable[Any]) -> float:
    """The highest value ``read`` returned while ``until`` ran (polled every few ms)."""
    task = asyncio.ensure_future(until)
    highest = read()
    while not task.done():
        highest = max(highest, read())
        await asyncio.sleep(0.005)
    await task
    return max(highest, read())


async def test_lag_seconds_count_from_recorded_at_not_occurred_at(app: App) -> None:
    """A replay of events that occurred two years ago but were recorded 90 s ago lags by
    about 90 s, not two years; 0 once caught up. Every batch is counted in the batch
    histograms and observed (freshness) from its newest event's recorded_at."""
    name = "pg:products"
    await build_while_empty(app, name)
    async with app.pool.acquire() as conn, conn.transaction():
        positions = await append_events(conn, [product_created(f"old {i}", 730) for i in range(20)])
        await conn.execute(
            "UPDATE events SET recorded_at = now() - interval '90 seconds' WHERE seq = ANY($1)",
            [p.seq for p in positions],
        )
    names = ("cqrs_projection_batch_events", "cqrs_projection_batch_seconds")
    before = {
        (n, part): of(f"{n}_{part}", name) for n in (*names, "cqrs_projection_delay_seconds")
        for part in ("count", "sum")
    }  # fmt: skip
    settings = dataclasses.replace(app.settings, projector_batch_size=2)
    res = dataclasses.replace(app, settings=settings)
    store = RecordingStore(projection(app, name).store, [])
    store.delay = 0.05  # 10 batches: the lag is sampled while behind
    stop = asyncio.Event()
    task = asyncio.create_task(make_runner(res, name, Wakeup(), store).run(stop))
    try:
        highest = await watch_max(
            lambda: of("cqrs_projection_lag_seconds", name), wait_applied(app, [name], within=60)
        )
        assert 85 <= highest < 3600, highest  # two years would be ~6.3e7

        async def caught_up() -> bool:
            return value("cqrs_projection_lag_seconds", projection=name, segment="") == 0

        await eventually(caught_up, within=20)
        assert of("cqrs_projection_lag_events", name) == 0
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)

    def grew(metric: str, part: str) -> float:
        return of(f"{metric}_{part}", name) - before[(metric, part)]

    batches = grew("cqrs_projection_batch_events", "count")
    assert grew("cqrs_projection_batch_events", "sum") == 20
    assert batches >= 10  # at most 2 events a batch
    assert grew("cqrs_projection_batch_seconds", "count") == batches
    assert grew("cqrs_projection_batch_seconds", "sum") >= 0.05 * batches  # the store's delay
    assert grew("cqrs_projection_delay_seconds", "count") == batches
    assert grew("cqrs_projection_delay_seconds", "sum") / batches >= 85
    # Out of leadership the process no longer exports the lag.
    assert value("cqrs_projection_lag_seconds", projection=name, segment="") is None


async def test_rebuild_progress_goes_to_one_and_rebuilding_back_to_zero(app: App) -> None:
    name = "redis:products"
    shop = Shop(app.pool)
    for _ in range(30):
        await shop.create_product()
    delays = of("cqrs_projection_delay_seconds_count", name)
    seen: list[tuple[float, float]] = []

    def sample() -> float:
        seen.append(
            (of("cqrs_projection_rebuilding", name), of("cqrs_projection_rebuild_progress", name))
        )
        return 0.0

    out = io.StringIO()
    rebuild = rebuilding.rebuild(
        [app.consumer(name)], app.pool, dsn=app.settings.asyncpg_dsn, batch_size=1, out=out
    )
    await watch_max(sample, rebuild)
    assert "live at" in out.getvalue(), out.getvalue()
    assert of("cqrs_projection_rebuilding", name) == 0
    assert of("cqrs_projection_rebuild_progress", name) == 1
    during = [p for r, p in seen if r == 1]
    assert any(0 < p < 1 for p in during), seen  # it moved while copying
    assert during == sorted(during)
    # A rebuild into a copy says nothing about freshness.
    assert of("cqrs_projection_delay_seconds_count", name) == delays


async def test_self_healing_rebuild_sets_the_rebuild_gauges(app: App) -> None:
    name = "pg:customers"
    shop = Shop(app.pool)
    for _ in range(5):
        await shop.create_customer()
    with pytest.raises(StoreLost):
        await app.consumer(name).checkpoint()  # never built: the runner builds it
    rebuilds = of("cqrs_projection_rebuilds_total", name)
    stop = asyncio.Event()
    runner = app.runner(app.consumer(name), Wakeup())
    task = asyncio.create_task(runner.run(stop))
    try:
        await wait_applied(app, [name], within=30)
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)
    assert of("cqrs_projection_rebuilds_total", name) == rebuilds + 1
    assert of("cqrs_projection_rebuild_progress", name) == 1
    assert of("cqrs_projection_rebuilding", name) == 0


async def scraped_leader(port: int, name: str) -> float | None:
    try:
        samples = await asyncio.to_thread(scrape, port)
    except OSError:
        return None  # not listening yet
    return samples.get(("cqrs_projection_leader", (("projection", name), ("segment", ""))))


async def test_leader_is_one_for_the_holder_and_zero_for_a_standby(
    app: App, tmp_path: Path
) -> None:
    name = "pg:orders"
    await build_while_empty(app, name)
    stop = asyncio.Event()
    runner = app.runner(app.consumer(name), Wakeup())
    task = asyncio.create_task(runner.run(stop))
    port = free_port()
    env = env_for(app.settings, CQRS_PROJECTOR_METRICS_PORT=str(port), CQRS_LOG_LEVEL="INFO")
    standby = start(["projector", "run", "--only", name], env, tmp_path / "standby.log")
    try:

        async def leading() -> bool:
            return runner.leading

        await eventually(leading, within=20)
        assert of("cqrs_projection_leader", name) == 1

        async def standing_by() -> bool:
            return await scraped_leader(port, name) == 0 and "standing by" in standby.log()

        await eventually(standing_by, within=60, interval=0.2)
        assert of("cqrs_projection_leader", name) == 1  # still ours

        stop.set()  # the holder lets go: the standby takes over
        await asyncio.wait_for(task, 20)
        assert of("cqrs_projection_leader", name) == 0

        async def took_over() -> bool:
            return await scraped_leader(port, name) == 1

        await eventually(took_over, within=60, interval=0.2)
    finally:
        stop.set()
        await asyncio.to_thread(standby.stop)
        if not task.done():
            task.cancel()
    assert standby.proc.returncode == 0, standby.log()


async def test_outbox_backlog_counts_what_the_slowest_projection_has_not_applied(
    app: App,
) -> None:
    fast, slow = "pg:products", "redis:products"
    for name in (fast, slow):
        await build_while_empty(app, name)
    write = await bootstrap_write(app.settings)
    try:
        assert await write.backlog.refresh() == 0
        shop = Shop(app.pool)
        for _ in range(5):
            await shop.create_product()
        await shop.create_customer()  # an event neither reads: it is still behind them
        runner = app.runner(app.consumer(fast), Wakeup())
        stop = asyncio.Event()
        task = asyncio.create_task(runner.run(stop))
        try:
            await wait_applied(app, [fast])
        finally:
            stop.set()
            await asyncio.wait_for(task, 20)
        # redis:products has applied nothing: it is the slowest.
        assert await write.backlog.refresh() == 6
        assert value("cqrs_outbox_backlog_events") == 6

        runner = app.runner(app.consumer(slow), Wakeup())
        stop = asyncio.Event()
        task = asyncio.create_task(runner.run(stop))
        try:
            await wait_applied(app, [slow])
        finally:
            stop.set()
            await asyncio.wait_for(task, 20)
        assert await write.backlog.refresh() == 0
    finally:
        await write.close()


async def test_the_backlog_task_starts_and_stops_with_the_write_app(settings: Settings) -> None:
    shop_app = await bootstrap_write(settings)
    try:
        async with shop_app.pool.acquire() as conn:
            await append_events(conn, [product_created("x", 0) for _ in range(3)])
        await shop_app.backlog.close()
        shop_app.backlog.start()  # refreshes at once: nothing is built, all 3 are behind

        async def counted() -> bool:
            return value("cqrs_outbox_backlog_events") == 3

        await eventually(counted, within=20)
    finally:
        await shop_app.close()
    assert shop_app.backlog._task is None


def pool(metric: str, name: str, state: str | None = None) -> float | None:
    labels = {"pool": name} if state is None else {"pool": name, "state": state}
    return value(metric, **labels)


@one_redis_only("takes a connection from the single-node pool (a cluster's: one per node)")
async def test_pool_gauges_follow_the_connections_held(app: App) -> None:
    read = await bootstrap_read(app.settings)
    try:
        # Its background read of the parked documents (every second) takes a connection
        # too: stopped, so that only this test's are counted.
        assert read.parked is not None
        await read.parked.close()
        assert pool("cqrs_db_pool_max", "read") == app.settings.db_pool_size
        held = pool("cqrs_db_pool_connections", "read", "in_use") or 0
        async with read.pg_pool.acquire() as conn:
            await conn.fetchval("SELECT 1")
            assert pool("cqrs_db_pool_connections", "read", "in_use") == held + 1
        assert pool("cqrs_db_pool_connections", "read", "in_use") == held
        assert (pool("cqrs_db_pool_connections", "read", "idle") or 0) >= 1

        redis_pool = app.redis.connection_pool
        assert pool("cqrs_redis_pool_max", "projector") == redis_pool.max_connections
        busy = pool("cqrs_redis_pool_connections", "projector", "in_use") or 0
        idle = pool("cqrs_redis_pool_connections", "projector", "idle") or 0
        connection = await redis_pool.get_connection()
        try:
            assert pool("cqrs_redis_pool_connections", "projector", "in_use") == busy + 1
        finally:
            await redis_pool.release(connection)
        assert pool("cqrs_redis_pool_connections", "projector", "in_use") == busy
        assert pool("cqrs_redis_pool_connections", "projector", "idle") == max(idle, 1)
    finally:
        await read.close()
    # Closed apps are no longer reported; the projector's pools still are.
    assert pool("cqrs_db_pool_max", "read") is None
    assert pool("cqrs_db_pool_max", "projector") is not None


@one_redis_only("a cluster's pool max is per node, summed over the nodes")
async def test_the_write_server_reports_its_pools(settings: Settings) -> None:
    write = await bootstrap_write(settings)
    try:
        assert pool("cqrs_db_pool_max", "write") == settings.db_pool_size * 2
        assert pool("cqrs_redis_pool_max", "write") == 1
        started = time.monotonic()
        async with write.pool.acquire():
            assert (pool("cqrs_db_pool_connections", "write", "in_use") or 0) >= 1
        assert time.monotonic() - started < 30
    finally:
        await write.close()
    assert pool("cqrs_db_pool_max", "write") is None


async def test_recorded_at_is_set_by_the_database_without_rewriting_the_table(
    settings: Settings,
) -> None:
    """Migration 0004's default is evaluated once for existing rows (no rewrite) and at
    insert for new ones: a command back-dated by two years is still recorded now."""
    write = await bootstrap_write(settings)
    try:
        fast_default = await write.pool.fetchval(
            "SELECT atthasmissing FROM pg_attribute "
            "WHERE attrelid = 'events'::regclass AND attname = 'recorded_at'"
        )
        assert fast_default is True
        two_years_ago = datetime.now(UTC) - timedelta(days=730)
        service = command_service(write.pool, clock=lambda: two_years_ago)
        result = await service.execute(
            commands.CreateProduct(name="old", price_cents=1, currency="EUR")
        )
        row = await write.pool.fetchrow(
            "SELECT occurred_at, extract(epoch FROM now() - recorded_at) AS age FROM events "
            "WHERE aggregate_id = $1::uuid",
            result.id,
        )
        assert row["occurred_at"] == two_years_ago
        assert 0 <= row["age"] < 60
    finally:
        await write.close()
