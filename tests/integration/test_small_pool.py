"""A projector with a small database pool still builds every consumer on its first start.

Each build holds its consumer's rebuild lock for as long as it runs; the lock used to be
taken on a pooled connection, so the first start (every consumer built at once) took
every connection of a pool smaller than the consumers and no build could read the log:
the projector hung, idle, forever (seen with ``CQRS_DB_POOL_SIZE=3``)."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from common.settings import Settings
from projector.bootstrap import open_app
from tests.support.events import Shop
from tests.support.projector import some_history, wait_applied

pytestmark = pytest.mark.integration


async def test_a_pool_smaller_than_the_consumers_builds_them_all(settings: Settings) -> None:
    small = dataclasses.replace(settings, db_pool_size=2)
    async with open_app(small) as app:
        assert app.pool.get_max_size() < len(app.consumers)
        await some_history(Shop(app.pool))
        stop = asyncio.Event()
        run = asyncio.create_task(app.projector().run(stop))
        try:
            await wait_applied(app, within=60)
        finally:
            stop.set()
            await asyncio.wait_for(run, 30)
