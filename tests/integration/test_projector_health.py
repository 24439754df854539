"""The projector's /healthz and /livez over HTTP, with real runners on PostgreSQL and
Redis: leaders and standbys, a poison event, stopping, an unreachable database and a
stuck event loop."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import pytest

from common.ops_http import OpsServer
from projector.bootstrap import App
from projector.health import CHECK_TIMEOUT_S, ProjectorHealth
from projector.process import Projector
from tests.support.events import (
    Shop,
    append_poison_update,
    eventually,
)
from tests.support.projector import wait_applied
from tests.support.servers import free_port

pytestmark = pytest.mark.integration

POISONED = {"pg:products", "redis:products"}


def fetch(port: int, path: str) -> tuple[int, dict[str, Any]]:
    """GET ``path``: the status and the JSON body (blocking: call it from a thread)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


async def get(port: int, path: str = "/healthz") -> tuple[int, dict[str, Any]]:
    return await asyncio.to_thread(fetch, port, path)


@asynccontextmanager
async def endpoint(
    pool: asyncpg.Pool, projector: Projector | None, stop: asyncio.Event
) -> AsyncIterator[int]:
    """An ops server answering for ``projector``'s runners; yields its port."""
    ops = OpsServer("127.0.0.1", 0)
    runners = projector.runners if projector is not None else []
    health = ProjectorHealth(asyncio.get_running_loop(), pool, runners, stop)
    ops.health, ops.live = health.readiness, health.liveness
    try:
        yield ops.port
    finally:
        await asyncio.to_thread(ops.close)


def roles(body: dict[str, Any]) -> set[tuple[str, str]]:
    return {(c["role"], c["state"]) for c in body["consumers"].values()}


async def test_healthz_reports_leaders_standbys_poison_and_stopping(app: App) -> None:
    # Active/passive (CQRS_PROJECTOR_FAIR_SHARE=false): the second is a hot standby of
    # every consumer, where a fair share would have it lead half of them.
    app.settings = dataclasses.replace(app.settings, projector_fair_share=False)
    leader, standby = app.projector(), app.projector()
    stop, standby_stop = asyncio.Event(), asyncio.Event()
    async with (
        endpoint(app.pool, leader, stop) as port,
        endpoint(app.pool, standby, standby_stop) as standby_port,
    ):
        run = asyncio.create_task(leader.run(stop))
        try:

            async def leading() -> bool:
                status, body = await get(port)
                return status == 200 and roles(body) == {("leader", "following")}

            await eventually(leading)
            shop = Shop(app.pool)
            await shop.create_product()
            await wait_applied(app)
            status, body = await get(port)
            assert status == 200 and body["status"] == "ok", body
            assert len(body["consumers"]) == len(app.consumers)
            assert {c["lag_events"] for c in body["consumers"].values()} == {0}

            async def reported_as_stored() -> bool:
                # Each checkpoint as committed in its store. The runners go on moving them
                # over other sessions' transactions (CI: one moved between the two reads),
                # so compare a report read while the stores stood still.
                before = {name: await app.consumer(name).checkpoint() for name in app.names()}
                _, reported = await get(port)
                after = {name: await app.consumer(name).checkpoint() for name in app.names()}
                if before != after:
                    return False
                for name, consumer in reported["consumers"].items():
                    stored = after[name]
                    assert consumer["checkpoint"] == {"xid": stored.xid, "seq": stored.seq}
                return True

            await eventually(reported_as_stored)

            standing_by = asyncio.create_task(standby.run(standby_stop))
            try:

                async def waiting() -> bool:
                    status, body = await get(standby_port)
                    return status == 200 and roles(body) == {("standby", "standby")}

                await eventually(waiting)  # a standby is ready: that is its job

                await _poison_product_update(app, await shop.create_product())

                async def poisoned() -> bool:
                    status, body = await get(port)
                    return (
                        status == 503
                        and {
                            name
                            for name, c in body["consumers"].items()
                            if c["state"] == "stopped-on-poison"
                        }
                        == POISONED
                    )

                await eventually(poisoned)
                _, body = await get(port)
                assert body["status"] == "stopped on a poison event: pg:products, redis:products"
            finally:
                standby_stop.set()
                await asyncio.wait_for(standing_by, 15)

            stop.set()
            status, body = await get(port)
            assert (status, body["status"]) == (503, "stopping")
        finally:
            stop.set()
            await asyncio.wait_for(run, 15)
        _, body = await get(port)
        stopped = {n: c["state"] for n, c in body["consumers"].items() if n not in POISONED}
        assert set(stopped.values()) == {"stopped"}, body
        assert {c["role"] for c in body["consumers"].values()} == {"standby"}  # leases given up


async def test_an_unreachable_database_makes_it_unready_but_alive() -> None:
    pool = await asyncpg.create_pool(
        f"postgresql://postgres@127.0.0.1:{free_port()}/nothing", min_size=0
    )
    try:
        async with endpoint(pool, None, asyncio.Event()) as port:
            status, body = await get(port)
            assert (status, body["status"]) == (503, "database unreachable")
            assert await get(port, "/livez") == (200, {"status": "ok"})
    finally:
        await pool.close()


async def test_a_stuck_event_loop_fails_liveness(app: App) -> None:
    async with endpoint(app.pool, None, asyncio.Event()) as port:
        assert (await get(port, "/livez"))[0] == 200
        answers: list[tuple[int, dict[str, Any]]] = []

        def probe() -> None:
            time.sleep(0.3)  # arrives while the loop is stuck
            answers.append(fetch(port, "/livez"))

        prober = threading.Thread(target=probe)
        prober.start()
        time.sleep(CHECK_TIMEOUT_S + 1.5)  # noqa: ASYNC251 - on purpose: the loop is stuck
        await asyncio.to_thread(prober.join)
        assert answers == [(503, {"status": "event loop not answering"})]
        assert (await get(port, "/livez"))[0] == 200


async def _poison_product_update(app: App, product_id: str) -> int:
    async with app.pool.acquire() as conn, conn.transaction():
        return await append_poison_update(conn, product_id)
