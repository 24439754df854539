"""The process's shared reader of the log (projector.feed) against real PostgreSQL: each
consumer gets exactly the batch it would have read itself, consumers at one position share
one statement, a stale read never stands in for news, a failed or abandoned read hurts no
one, and a consumer skips the stretches that hold nothing of its own."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest

from common.positions import ORIGIN, Position
from projector.bootstrap import App
from projector.feed import LogFeed
from projector.outbox import read_batch
from projector.process import make_runner
from projector.projection import Projection
from projector.wakeup import Wakeup
from tests.support.events import Shop, eventually
from tests.support.projector import (
    RecordingStore,
    assert_chained,
    below_the_horizon,
    build_while_empty,
    projection,
    some_history,
)

pytestmark = pytest.mark.integration

NAMES = ("pg:products", "redis:customers", "pg:orders", "pg:analytics", "webhooks:fanout")


class Counter:
    """The wakeup generation, set by the test."""

    generation = 0


class Flaky:
    """The pool, but the first ``fail`` statements raise and each waits ``delay`` first."""

    def __init__(self, pool: Any, fail: int = 0, delay: float = 0.0) -> None:
        self._pool = pool
        self.fail = fail
        self.delay = delay

    async def fetch(self, query: str, *args: Any) -> list[Any]:
        await asyncio.sleep(self.delay)
        if self.fail:
            self.fail -= 1
            raise ConnectionError("the database went away")
        rows: list[Any] = await self._pool.fetch(query, *args)
        return rows

    async def fetchval(self, query: str, *args: Any) -> Any:
        return await self._pool.fetchval(query, *args)


async def test_each_consumer_gets_its_own_batch_from_one_statement(app: App) -> None:
    await some_history(Shop(app.pool))
    await below_the_horizon(app)
    consumers = [app.consumer(n) for n in NAMES]
    # Runners woken by one NOTIFY (generation 0): they share even the last, partial read.
    feed = LogFeed(app.pool, consumers, generation=Counter())
    for limit in (1, 4, 7, 1000):
        at = {c.name: ORIGIN for c in consumers}
        statements = feed.statements
        reads = 0
        while True:
            # Every consumer asks at the same position: one statement for them all.
            starts = set(at.values())
            assert len(starts) == 1
            batches = [await feed.batch(c, at[c.name], limit, seen=0) for c in consumers]
            reads += 1
            assert feed.statements == statements + reads
            for consumer, batch in zip(consumers, batches, strict=True):
                # What the consumer would have read alone, up to where the shared read ends.
                alone = await read_batch(
                    app.pool, batch.start, consumer.consumes, 10_000, consumer.event_types
                )
                mine = [e.position for e in alone.events if e.position <= batch.next]
                assert [e.position for e in batch.events] == mine, consumer.name
                at[consumer.name] = batch.next
            if not batches[0].full:
                break
        assert reads > 1 or limit == 1000


async def test_a_full_read_is_shared_but_one_that_was_not_is_read_again_for_news(
    app: App,
) -> None:
    shop = Shop(app.pool)
    await shop.create_product()
    await below_the_horizon(app)
    products = app.consumer("pg:products")
    wakeups = Counter()
    feed = LogFeed(app.pool, [products], generation=wakeups)

    full = await feed.batch(products, ORIGIN, 1)
    assert full.full and await feed.batch(products, ORIGIN, 1) == full
    assert feed.statements == 1  # a full read is final: anyone may have it

    first = await feed.batch(products, ORIGIN, 100)
    assert not first.full and len(first.events) == 1
    assert feed.statements == 2
    created = await shop.create_product()
    await below_the_horizon(app)
    # Woken by no NOTIFY since that read began: it will do (the next one wakes the asker).
    assert await feed.batch(products, ORIGIN, 100, seen=0) == first
    assert feed.statements == 2
    # A NOTIFY came after it began, or the asker polls: read again, and see the news.
    wakeups.generation = 1
    for seen in (1, None):
        again = await feed.batch(products, ORIGIN, 100, seen=seen)
        assert [e.aggregate_id for e in again.events][-1] == created
    assert feed.statements == 4
    await feed.aclose()


async def test_a_failed_read_is_not_kept_and_an_abandoned_one_still_answers(app: App) -> None:
    await Shop(app.pool).create_product()
    await below_the_horizon(app)
    products, orders = app.consumer("pg:products"), app.consumer("pg:orders")
    db = Flaky(app.pool, fail=1)
    feed = LogFeed(db, [products, orders])
    with pytest.raises(ConnectionError):
        await feed.batch(products, ORIGIN, 100)
    assert len((await feed.batch(products, ORIGIN, 100)).events) == 1

    # One asker gives up (cancelled) while the statement runs: the other still gets it.
    db.delay = 0.3
    slow = LogFeed(db, [products, orders], generation=Counter())
    quitter = asyncio.create_task(slow.batch(orders, ORIGIN, 100, seen=0))
    stayer = asyncio.create_task(slow.batch(products, ORIGIN, 100, seen=0))
    await asyncio.sleep(0.1)
    quitter.cancel()
    batch = await stayer
    assert quitter.cancelled() and len(batch.events) == 1 and slow.statements == 1
    await slow.aclose()


async def test_a_runner_gathers_reads_into_one_commit(
    app: App,
) -> None:
    live = projection(app, "pg:products")
    log: list[tuple[str, Position, Position]] = []
    store = RecordingStore(live.store, log)
    built = await build_while_empty(app, "pg:products")
    shop = Shop(app.pool)
    first = await shop.create_product()
    for _ in range(12):
        await shop.create_customer()
    last = await shop.create_product()
    target = await below_the_horizon(app)
    # The process's feed reads products and customers, 3 events at a time.
    feed = LogFeed(app.pool, [live, app.consumer("pg:customers")])
    settings = dataclasses.replace(app.settings, projector_batch_size=3)
    runner = make_runner(
        settings, app.pool, app.failures, Projection(live.kind, store), Wakeup(), feed
    )
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    try:

        async def caught_up() -> bool:
            return await store.checkpoint() >= target

        await eventually(caught_up)
    finally:
        stop.set()
        await task
    # 14 events in reads of 3: the first product's, then 4 reads of customers only, then
    # the last product's: gathered into one batch of the runner's two events (it holds
    # fewer than 3 of its own until the horizon), so the first commit reaches the target.
    assert_chained(log, built)
    reached = next(i for i, (_, _, new) in enumerate(log) if new >= target)
    assert reached == 0, log
    assert {first, last} <= set(await store.all_documents())
