"""Insert order is not commit order, and seq order is not (xid, seq) order.

- ``test_held_open_write_is_applied_once_after_later_commits``: the real write side
  holds a transaction open (its events already have the lower seq) while later
  commands commit. The projector must wait for it, never skip it, and apply every
  event exactly once.
- ``test_events_whose_xid_order_contradicts_seq_order_are_applied_once_each``: a
  transaction that took the lower xid inserts (and commits) after one with a higher
  xid, so its event has the higher seq. The runners must read in (xid, seq) order:
  guards against ordering the outbox read by seq alone (``_READ`` in
  projector/outbox.py), which skips such an event forever.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid

import asyncpg

from common import events as ev
from common.positions import Position, decode_token
from common.settings import Settings
from projector.bootstrap import App, open_app
from projector.verify import verify
from projector.wakeup import Wakeup
from tests.contract.write_model import product
from tests.support.events import NewEvent, append_events, eventually, now
from tests.support.projector import (
    RecordingStore,
    applied_total,
    assert_chained,
    build_while_empty,
    make_runner,
    projection,
    verify_quietly,
    wait_applied,
)
from write_server.adapters.postgres_uow import OrderNumbers, PostgresUnitOfWork, open_pool
from write_server.bootstrap import command_service
from write_server.service_layer.handlers import Context, create_product
from write_server.service_layer.service import new_uuid, utc_now


async def _checkpoints(conn: asyncpg.Connection) -> dict[str, tuple[int, int]]:
    rows = await conn.fetch("SELECT projection, xid, seq FROM read.projection_checkpoints")
    return {r["projection"]: (r["xid"], r["seq"]) for r in rows}


async def test_held_open_write_is_applied_once_after_later_commits(settings: Settings) -> None:
    pool = await open_pool(settings)
    service = command_service(pool)
    conn = await asyncpg.connect(settings.asyncpg_dsn)
    stop = asyncio.Event()
    try:
        async with open_app(settings) as app:
            running = asyncio.create_task(app.projector().run(stop))
            held = PostgresUnitOfWork(pool, OrderNumbers())
            async with held:
                slow = await create_product(
                    product(name="slow"), held, Context(utc_now(), new_uuid)
                )
                held_position = await held.flush({})
                assert held_position is not None
                later = [await service.execute(product(name=f"fast{n}")) for n in range(5)]
                later_positions = [decode_token(r.consistency_token) for r in later]
                assert all(p is not None and p.seq > held_position.seq for p in later_positions)

                # The later commands are committed, but the projector must not pass the
                # open transaction: nothing from after it may be visible yet.
                await asyncio.sleep(1.0)
                names = {
                    r["name"] for r in await conn.fetch("SELECT name FROM read.product_read_model")
                }
                assert names == set(), names
                for xid, _ in (await _checkpoints(conn)).values():
                    assert xid <= held_position.xid
                await held.commit()

            async def caught_up() -> bool:
                rows = await conn.fetch("SELECT id::text FROM read.product_read_model")
                return {r["id"] for r in rows} == {slow.id, *(r.id for r in later)}

            await eventually(caught_up)
            stop.set()
            await running
            assert await verify(app.consumers, app.pool) == 0
    finally:
        stop.set()
        await conn.close()
        await pool.close()


# -- commit order that contradicts seq order ---------------------------------------------------

PRODUCT_PROJECTIONS = ("pg:products", "redis:products")


async def _create_product_in(conn: asyncpg.Connection, name: str) -> tuple[str, Position]:
    """A products row and its ProductCreated event in ``conn``'s open transaction (the
    columns and payload Shop.create_product writes, so ``verify`` has a write model)."""
    product_id, at = str(uuid.uuid4()), now()
    fields = {
        "name": name,
        "description": "",
        "price_cents": 1000,
        "currency": "EUR",
        "category": "books",
        "stock": 100,
    }
    await conn.execute(
        "INSERT INTO products (id, name, description, price_cents, currency, category, "
        "stock, version, created_at, updated_at) VALUES ($1,$2,$3,$4,$5,$6,$7,1,$8,$8)",
        uuid.UUID(product_id),
        *fields.values(),
        at,
    )
    (position,) = await append_events(
        conn, [NewEvent(ev.PRODUCT, product_id, 1, ev.PRODUCT_CREATED, fields, at)]
    )
    return product_id, position


async def _pair_committed_out_of_seq_order(
    pool: asyncpg.Pool, n: int
) -> tuple[tuple[str, Position], tuple[str, Position]]:
    """Two committed products: the *early* transaction took the lower xid but inserted
    after the *late* one, so its event has the higher seq; (early, late)."""
    async with pool.acquire() as early, pool.acquire() as late, early.transaction():
        # Forces early's xid now, before late's transaction exists: early's is the lower xid.
        await early.fetchval("SELECT pg_current_xact_id()")
        async with late.transaction():
            late_product = await _create_product_in(late, f"late {n}")
        # late has committed; early inserts now, taking a seq above late's, then commits.
        early_product = await _create_product_in(early, f"early {n}")
    return early_product, late_product


async def test_events_whose_xid_order_contradicts_seq_order_are_applied_once_each(
    app: App,
) -> None:
    """Proves that the runners read the log in (xid, seq) order, not by seq alone.

    Each pair commits two events whose xid order contradicts their seq order (the lower
    xid has the higher seq). With batches of one event, a reader ordered by seq alone
    (the guarded bug: ``ORDER BY v.seq`` in projector/outbox.py ``_READ``) takes the
    late event first, moves the checkpoint to its (higher) xid and so skips the early
    event forever, because (xid, seq) > checkpoint no longer holds for it. Read in
    (xid, seq) order, every event is applied exactly once, in log order.
    """
    pairs = 4
    settings = dataclasses.replace(
        app.settings, projector_batch_size=1, projector_poll_interval_ms=50
    )
    res = dataclasses.replace(app, settings=settings)
    logs: dict[str, list[tuple[str, Position, Position]]] = {n: [] for n in PRODUCT_PROJECTIONS}
    # Built while the log is empty, so every event goes through the runners' follow path.
    built_at = {name: await build_while_empty(app, name) for name in PRODUCT_PROJECTIONS}
    before = {name: applied_total(name) for name in PRODUCT_PROJECTIONS}
    stop = asyncio.Event()
    wakeup = Wakeup()
    tasks = [
        asyncio.create_task(
            make_runner(
                res, name, wakeup, RecordingStore(projection(app, name).store, logs[name], name)
            ).run(stop)
        )
        for name in PRODUCT_PROJECTIONS
    ]
    expected: set[str] = set()
    try:
        for n in range(pairs):
            (early_id, early), (late_id, late) = await _pair_committed_out_of_seq_order(app.pool, n)
            # The premise: the later-committed pair member comes first in seq order only.
            assert early.xid < late.xid and early.seq > late.seq, (early, late)
            expected |= {early_id, late_id}
        await wait_applied(res, PRODUCT_PROJECTIONS)
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 10)

    for name in PRODUCT_PROJECTIONS:
        applied = set(await projection(app, name).store.all_documents())
        assert applied == expected, f"{name}: skipped {sorted(expected - applied)}"
        # Each commit starts where the previous one ended: no event applied twice or skipped.
        assert_chained(logs[name], built_at[name])
        assert applied_total(name) - before[name] == 2 * pairs, f"{name}: events applied"
    differences, report = await verify_quietly(app, PRODUCT_PROJECTIONS)
    assert differences == 0, report
