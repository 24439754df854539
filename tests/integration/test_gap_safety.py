"""Insert order is not commit order: the real write side holds a transaction open
(its events already have the lower seq) while later commands commit. The projector
must wait for it, never skip it, and apply every event exactly once."""

from __future__ import annotations

import asyncio

import asyncpg

from common.positions import decode_token
from common.settings import Settings
from projector.bootstrap import open_app
from projector.verify import verify
from tests.contract.write_model import product
from tests.support.events import eventually
from write_server.adapters.sqlalchemy_uow import SqlAlchemyUnitOfWork
from write_server.bootstrap import create_engine
from write_server.service_layer.handlers import Context, create_product
from write_server.service_layer.service import CommandService, new_uuid, utc_now


async def _checkpoints(conn: asyncpg.Connection) -> dict[str, tuple[int, int]]:
    rows = await conn.fetch("SELECT projection, xid, seq FROM read.projection_checkpoints")
    return {r["projection"]: (r["xid"], r["seq"]) for r in rows}


async def test_held_open_write_is_applied_once_after_later_commits(settings: Settings) -> None:
    engine = create_engine(settings)
    service = CommandService(lambda: SqlAlchemyUnitOfWork(engine))
    conn = await asyncpg.connect(settings.asyncpg_dsn)
    stop = asyncio.Event()
    try:
        async with open_app(settings) as app:
            running = asyncio.create_task(app.projector().run(stop))
            held = SqlAlchemyUnitOfWork(engine)
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
        await engine.dispose()
