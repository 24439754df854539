"""A batch's compare-and-set on its checkpoint row in one statement
(``pg_checkpoints.advance``): it moves only from the expected position, locks the row for
the rest of its transaction, and waits for a concurrent move (a rewind holding the row)
and then fails on it, as the ``SELECT ... FOR UPDATE`` it replaced did."""

from __future__ import annotations

import asyncio

import pytest

from common.positions import ORIGIN, Position
from projector.bootstrap import App
from projector.errors import CheckpointMoved, StoreLost
from projector.outbox import Batch
from projector.snapshots import SnapshotWriter
from projector.stores import pg_checkpoints

pytestmark = pytest.mark.integration

NAME = "pg:advance-test"
AT, NEXT, LATER = Position(5, 1), Position(5, 9), Position(7, 2)


async def _row(app: App, name: str = NAME) -> Position | None:
    return await pg_checkpoints.read(app.pool, name)


async def _at(app: App, position: Position) -> None:
    await pg_checkpoints.ensure(app.pool, NAME)
    await pg_checkpoints.write(app.pool, NAME, position)


async def test_it_moves_from_the_expected_position_only(app: App) -> None:
    await _at(app, AT)
    await pg_checkpoints.advance(app.pool, NAME, AT, NEXT)
    assert await _row(app) == NEXT

    with pytest.raises(CheckpointMoved) as moved:
        await pg_checkpoints.advance(app.pool, NAME, AT, LATER)  # a second runner, stale
    assert type(moved.value) is CheckpointMoved and moved.value.found == NEXT
    assert await _row(app) == NEXT


async def test_a_missing_row_is_a_lost_store(app: App) -> None:
    with pytest.raises(StoreLost):  # (a CheckpointMoved too: the runner rebuilds on it)
        await pg_checkpoints.advance(app.pool, NAME, ORIGIN, NEXT)
    assert await _row(app) is None


async def test_it_is_undone_with_its_transaction(app: App) -> None:
    await _at(app, AT)
    with pytest.raises(RuntimeError):
        async with app.pool.acquire() as conn, conn.transaction():
            await pg_checkpoints.advance(conn, NAME, AT, NEXT)
            raise RuntimeError("the batch's writes failed")
    assert await _row(app) == AT


@pytest.mark.parametrize("rewind_commits", [True, False])
async def test_it_waits_for_a_rewind_holding_the_row(app: App, rewind_commits: bool) -> None:
    await _at(app, NEXT)
    async with app.pool.acquire() as rewinder:
        tx = rewinder.transaction()
        await tx.start()
        await pg_checkpoints.move_back(rewinder, NAME, AT)  # holds the row until it ends
        runner = asyncio.create_task(pg_checkpoints.advance(app.pool, NAME, NEXT, LATER))
        await asyncio.sleep(0.3)
        assert not runner.done(), "the compare-and-set did not wait for the row"
        await (tx.commit() if rewind_commits else tx.rollback())
    if rewind_commits:
        with pytest.raises(CheckpointMoved) as moved:
            await runner
        assert moved.value.found == AT
        assert await _row(app) == AT
    else:
        await runner
        assert await _row(app) == LATER


async def test_an_outbound_consumer_whose_row_is_gone_reads_it_again(app: App) -> None:
    """Outbound consumers are never rebuilt: a missing row is a moved checkpoint (the
    runner reads it again, which creates it at the origin), not a lost store."""
    writer = SnapshotWriter(app.pool, every=100)
    batch = Batch(start=ORIGIN, events=[], next=NEXT, full=False)
    with pytest.raises(CheckpointMoved) as moved:
        await writer.apply(batch)
    assert type(moved.value) is CheckpointMoved and moved.value.found is None
    assert await writer.checkpoint() == ORIGIN
    await writer.apply(batch)
    assert await writer.checkpoint() == NEXT
