"""A PostgreSQL projection's rows and its checkpoint change in one transaction, or not at all.

The tests make the checkpoint write itself fail, after the batch's rows were written:
a trigger on ``read.projection_checkpoints`` refuses every update of a checkpoint row
listed in a flag table (with SQLSTATE 40001, which the runner treats as transient and
retries). Guards against the bug of writing the checkpoint in a second transaction
after the rows' transaction committed (``PgProjectionStore.commit`` in
projector/stores/pg_store.py): the rows would then stay applied while the checkpoint
stays behind them.

- ``test_a_failed_checkpoint_write_leaves_rows_and_checkpoint_as_they_were``: the
  store alone: the failure surfaces and neither rows nor checkpoint changed.
- ``test_runner_shows_no_rows_of_a_batch_whose_checkpoint_write_fails``: the real
  runner path: while the checkpoint write keeps failing the read model shows nothing
  of the unapplied batch; once it succeeds again the projector catches up and
  ``verify`` finds no difference.
"""

from __future__ import annotations

import asyncio
import io
import uuid

import asyncpg
import pytest

from common.entities import PRODUCTS
from common.pb.shop.v1 import shop_pb2
from common.positions import ORIGIN, Position
from projector.bootstrap import App
from projector.stores.pg_store import PgProjectionStore
from projector.stores.port import Change
from projector.verify import verify
from tests.contract.projection_store import a_product, as_it_is, put
from tests.support.events import Shop, eventually
from tests.support.projector import wait_applied

pytestmark = pytest.mark.integration

P1 = Position(10, 1)
P2 = Position(12, 0)

# Refuses the update of a checkpoint row while its projection is in the flag table; the
# refusal count is a sequence, because nextval survives the rollback the error causes.
_REFUSE_CHECKPOINT_WRITES = """
CREATE TABLE public.refused_checkpoints (projection text PRIMARY KEY);
CREATE SEQUENCE public.checkpoint_refusals;
CREATE FUNCTION public.refuse_checkpoint_write() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF EXISTS (SELECT 1 FROM public.refused_checkpoints r WHERE r.projection = NEW.projection)
  THEN
    PERFORM nextval('public.checkpoint_refusals');
    RAISE EXCEPTION 'test: checkpoint write of % refused', NEW.projection
      USING ERRCODE = 'serialization_failure';
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER refuse_checkpoint_write
  BEFORE UPDATE ON read.projection_checkpoints
  FOR EACH ROW WHEN (NEW.projection = 'pg:products')
  EXECUTE FUNCTION public.refuse_checkpoint_write();
"""


async def _refuse_checkpoint_writes(pool: asyncpg.Pool, refuse: bool) -> None:
    if refuse:
        await pool.execute("INSERT INTO public.refused_checkpoints VALUES ('pg:products')")
    else:
        await pool.execute("DELETE FROM public.refused_checkpoints")


async def _refusals(pool: asyncpg.Pool) -> int:
    return int(
        await pool.fetchval(
            "SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM public.checkpoint_refusals"
        )
    )


async def _live_products_store(app: App) -> PgProjectionStore:
    """``pg:products`` built empty and switched in (live), at the origin."""
    store = PgProjectionStore(app.pool, PRODUCTS)
    await store.switch_to(await store.new_copy(), as_it_is)
    assert await store.checkpoint() == ORIGIN
    return store


async def test_a_failed_checkpoint_write_leaves_rows_and_checkpoint_as_they_were(
    app: App,
) -> None:
    await app.pool.execute(_REFUSE_CHECKPOINT_WRITES)
    store = await _live_products_store(app)
    p1, p2 = a_product(1), a_product(2)
    await store.commit(ORIGIN, P1, put(p1, p2))

    await _refuse_checkpoint_writes(app.pool, True)
    # An update, a delete and an insert: the checkpoint write comes after all of them.
    batch = [
        Change(p1.id, p1, a_product(1, category="games", version=2)),
        Change(p2.id, p2, None),
        *put(a_product(3)),
    ]
    with pytest.raises(asyncpg.SerializationError, match="checkpoint write of pg:products"):
        await store.commit(P1, P2, batch)
    assert await _refusals(app.pool) == 1  # it failed at the checkpoint write itself

    assert await store.checkpoint() == P1
    assert await store.all_documents() == {p1.id: p1, p2.id: p2}, (
        "rows of a batch whose checkpoint was not written"
    )

    # Nothing was half-done: the same batch commits once the checkpoint can be written.
    await _refuse_checkpoint_writes(app.pool, False)
    await store.commit(P1, P2, batch)
    assert await store.checkpoint() == P2
    assert set(await store.all_documents()) == {p1.id, a_product(3).id}


async def test_runner_shows_no_rows_of_a_batch_whose_checkpoint_write_fails(app: App) -> None:
    await app.pool.execute(_REFUSE_CHECKPOINT_WRITES)
    shop = Shop(app.pool)
    first = await shop.create_product()
    stop = asyncio.Event()
    run = asyncio.create_task(app.projector().run(stop))
    store = PgProjectionStore(app.pool, PRODUCTS)
    try:
        await wait_applied(app)
        assert set(await store.all_documents()) == {first}

        await _refuse_checkpoint_writes(app.pool, True)
        later = {await shop.create_product(), await shop.create_product()}
        await shop.update_product(first, name="renamed")
        refused = await _refusals(app.pool)

        async def retried() -> bool:
            # Attempts started after every event above had committed: they read them all.
            return await _refusals(app.pool) >= refused + 2

        # The runner's commits keep failing (transient: it backs off and retries).
        await eventually(retried, within=10)
        # Every event after the first product's creation is unapplied (the checkpoint itself
        # may still have moved over other transactions' xids before the refusals began).
        unapplied = await app.pool.fetchrow(
            "SELECT xid::text::bigint AS xid, seq FROM events "
            "WHERE NOT (aggregate_id = $1 AND aggregate_version = 1) ORDER BY xid, seq LIMIT 1",
            uuid.UUID(first),
        )
        assert await store.checkpoint() < Position(unapplied["xid"], unapplied["seq"])
        docs = await store.all_documents()
        assert set(docs) == {first}, f"rows of unapplied events: {sorted(set(docs) - {first})}"
        kept = docs[first]
        assert isinstance(kept, shop_pb2.Product) and kept.version == 1, "an unapplied update"

        await _refuse_checkpoint_writes(app.pool, False)
        await wait_applied(app)
        assert set(await store.all_documents()) == {first, *later}
    finally:
        stop.set()
        await asyncio.wait_for(run, 10)
    report = io.StringIO()
    assert await verify(app.consumers, app.pool, out=report) == 0, report.getvalue()
