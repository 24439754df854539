"""Projector test helpers: a recording store wrapper, waiting for projections, some history.

Shared by the projector's integration tests (runner, rebuild, gap safety, checkpoint
atomicity, customer lock).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
from collections.abc import AsyncIterator, Sequence
from typing import Any

from prometheus_client import REGISTRY

from common.event_log import Executor
from common.positions import ORIGIN, Position
from projector import verify as verify_module
from projector.bootstrap import App
from projector.consumer import Consumer
from projector.errors import StoreLost
from projector.outbox import head
from projector.projection import Projection
from projector.rebuild import rebuild_one
from projector.runner import ConsumerRunner
from projector.stores.port import Change, ProjectionStore, StoreCatchUp
from projector.wakeup import Wakeup
from tests.support.events import Shop, eventually


class RecordingStore:
    """Wraps a real store and logs every successful commit as (runner tag, expected, new);
    everything else goes straight to the real store."""

    def __init__(
        self, inner: ProjectionStore, log: list[tuple[str, Position, Position]], tag: str = ""
    ) -> None:
        self.inner = inner
        self.log = log
        self.tag = tag
        self.delay = 0.0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    @property
    def name(self) -> str:
        return self.inner.name

    async def commit(self, expected: Position, new: Position, changes: Sequence[Change]) -> None:
        await asyncio.sleep(self.delay)  # widens the window for crash tests
        await self.inner.commit(expected, new, changes)
        self.log.append((self.tag, expected, new))

    # A projection starts as a copy that is built and switched in: record its commits too.

    async def new_copy(self) -> RecordingStore:
        return RecordingStore(await self.inner.new_copy(), self.log, self.tag)

    async def switch_to(self, copy: ProjectionStore, catch_up: StoreCatchUp) -> Position:
        assert isinstance(copy, RecordingStore)

        async def recorded(store: ProjectionStore, db: Executor | None) -> Position:
            inner = store.inner if isinstance(store, RecordingStore) else store
            return await catch_up(RecordingStore(inner, self.log, self.tag), db)

        return await self.inner.switch_to(copy.inner, recorded)


def projection(app: App, name: str) -> Projection:
    consumer = app.consumer(name)
    assert isinstance(consumer, Projection)
    return consumer


def make_runner(app: App, name: str, wakeup: Wakeup, store: ProjectionStore) -> ConsumerRunner:
    """A runner of projection ``name`` over ``store`` (e.g. a RecordingStore)."""
    return app.runner(Projection(projection(app, name).kind, store), wakeup)


def assert_chained(log: list[tuple[str, Position, Position]], start: Position = ORIGIN) -> None:
    """Every commit starts where the previous one ended: no event applied twice or skipped."""
    assert log, "nothing was committed"
    assert log[0][1] == start
    for (_, _, previous), (_, expected, _) in itertools.pairwise(log):
        assert expected == previous


def _db(source: App | Executor) -> Executor:
    return source.pool if isinstance(source, App) else source


async def last_event(source: App | Executor) -> Position:
    rows = await _db(source).fetch(
        "SELECT xid::text::bigint AS xid, seq FROM events ORDER BY xid DESC, seq DESC LIMIT 1"
    )
    return Position(rows[0]["xid"], rows[0]["seq"]) if rows else ORIGIN


async def below_the_horizon(source: App | Executor, within: float = 20) -> Position:
    """Until every event in the log is below the commit-safe horizon, so a rebuild or a
    catch-up reads it: another session's open transaction (anywhere in the cluster, such
    as a concurrent test's) holds the horizon back, and a rebuild started meanwhile stops
    before our newest events. The last event's position."""
    target = await last_event(source)

    async def passed() -> bool:
        return (await head(_db(source))).xid > target.xid

    await eventually(passed, within=within)
    return target


async def wait_applied(
    app: App, projections: Sequence[str] | None = None, within: float = 20
) -> None:
    """Until every projection's (default: every consumer's) checkpoint covers the last
    event in the log."""
    target = await last_event(app)
    projections = app.names() if projections is None else projections

    async def done() -> bool:
        for p in projections:
            try:
                if await app.consumer(p).checkpoint() < target:
                    return False
            except StoreLost:  # not built yet
                return False
        return True

    await eventually(done, within=within)


async def applied_up_to_now(app: App, name: str) -> bool:
    try:
        return await app.consumer(name).checkpoint() >= await last_event(app)
    except StoreLost:  # not built yet
        return False


async def build_while_empty(app: App, name: str) -> Position:
    """Build a projection while the log holds none of its events; where it went live."""
    rebuilt = await rebuild_one(app.consumer(name), app.pool, 10)
    assert rebuilt.position.seq == 0 and rebuilt.poison is None
    return rebuilt.position


def applied_total(projection: str) -> float:
    return (
        REGISTRY.get_sample_value(
            "cqrs_projection_events_total", {"projection": projection, "segment": ""}
        )
        or 0
    )


async def some_history(shop: Shop, size: int = 3) -> None:
    products = [await shop.create_product(category=c) for c in ("books", "games", "") * size]
    customers = [await shop.create_customer() for _ in range(size)]
    orders = [
        await shop.place_order(customers[i % size], [(products[i], 1), (products[i + 1], 2)])
        for i in range(size * 2)
    ]
    await shop.update_customer(customers[0], name="Renamed", email="renamed@example.com")
    await shop.update_customer(customers[1], city="Elsewhere")
    await shop.set_order_status(orders[0], "CONFIRMED")
    await shop.set_order_status(orders[0], "SHIPPED")
    await shop.set_order_status(orders[1], "CANCELLED")
    await shop.delete_order(orders[2])
    await shop.update_product(products[0], category="music", price_cents=1)
    await shop.delete_product(products[-1])
    await shop.delete_customer(customers[-1])


async def verify_quietly(app: App, names: Sequence[str] | None = None) -> tuple[int, str]:
    """``cqrs projector verify`` of every consumer (or those named): differences, report."""
    out = io.StringIO()
    consumers = app.consumers if names is None else [app.consumer(n) for n in names]
    return await verify_module.verify(consumers, app.pool, out=out), out.getvalue()


@contextlib.asynccontextmanager
async def leading(app: App, consumer: Consumer) -> AsyncIterator[ConsumerRunner]:
    """A runner of ``consumer`` running (and so leading it) until the block ends."""
    runner = app.runner(consumer, Wakeup())
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    try:
        yield runner
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)
