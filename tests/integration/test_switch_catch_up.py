"""A PostgreSQL copy is caught up *inside* the switch, under the lock on the live
checkpoint row, so a live batch committed after the copy's earlier catch-up can never
leave the copy behind the live projection, and none can commit during the last one.

- A live batch that commits between the copy's catch-up (before the switch) and the
  switch: the catch-up inside the switch takes it in; without that catch-up the switch
  would find the copy behind and fail the rebuild (``RuntimeError``).
- A live batch started during the catch-up inside the switch waits for the switch (and
  then finds its checkpoint moved); with the catch-up done before the lock it would
  commit meanwhile, moving the live projection past the copy.
"""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from common.event_log import Executor
from common.positions import Position
from projector.bootstrap import App
from projector.consumer import Consumer
from projector.errors import CheckpointMoved
from projector.outbox import read_batch
from projector.rebuild import catch_up
from tests.support.events import Shop, eventually
from tests.support.projector import last_event, projection, verify_quietly

pytestmark = pytest.mark.integration


async def _one_live_batch(app: App, live: Consumer) -> None:
    batch = await read_batch(app.pool, await live.checkpoint(), live.consumes, 100)
    # CheckpointMoved: the switch got in first; the runner would reload and go on.
    with contextlib.suppress(CheckpointMoved):
        await live.apply(batch)


async def _built(app: App) -> tuple[Shop, str, Consumer]:
    shop = Shop(app.pool)
    product = await shop.create_product(price_cents=100)
    live = projection(app, "pg:products")
    await live.switch_to(await live.new_copy(), lambda c, db: catch_up(c, db or app.pool, 100))
    return shop, product, live


async def test_a_live_batch_after_the_copys_catch_up_is_caught_up_in_the_switch(
    app: App,
) -> None:
    shop, product, live = await _built(app)
    injected = False

    async def fill(target: Consumer, db: Executor | None) -> Position:
        nonlocal injected
        position = await catch_up(target, db or app.pool, 100)
        if db is None and not injected:  # the copy's catch-up before the switch
            injected = True
            await shop.update_product(product, price_cents=200)
            changed = await last_event(app)

            async def live_has_it() -> bool:
                await catch_up(live, app.pool, 100)
                return await live.checkpoint() > changed

            await eventually(live_has_it)
        return position

    await live.switch_to(await live.new_copy(), fill)
    differences, report = await verify_quietly(app, ["pg:products"])
    assert differences == 0, report


async def test_no_live_batch_commits_during_the_catch_up_inside_the_switch(app: App) -> None:
    shop, product, live = await _built(app)
    during: list[bool] = []
    batch: list[asyncio.Task[None]] = []

    async def fill(target: Consumer, db: Executor | None) -> Position:
        if db is not None and not batch:  # inside the switch
            await shop.update_product(product, price_cents=300)
            batch.append(asyncio.create_task(_one_live_batch(app, live)))
            await asyncio.wait(batch, timeout=0.5)
            during.append(batch[0].done())
        return await catch_up(target, db or app.pool, 100)

    await live.switch_to(await live.new_copy(), fill)
    await asyncio.wait_for(batch[0], 10)
    assert during == [False], "a live batch committed while the switch caught the copy up"
    await catch_up(live, app.pool, 100)
    differences, report = await verify_quietly(app, ["pg:products"])
    assert differences == 0, report
