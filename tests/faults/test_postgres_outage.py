"""PostgreSQL stopped and restarted under load (a cluster of the test's own).

Commands answer UNAVAILABLE while it is down (never INTERNAL/UNKNOWN) and are retried
with their request id; every command answered OK took effect exactly once, a retry
returns exactly the first reply, reads of the write model answer UNAVAILABLE while
projection reads go on, the servers stay up, and the projector catches up cleanly.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from pathlib import Path

import asyncpg
import grpc
import pytest

from common.pb.shop.v1 import command_service_pb2_grpc as cpb_grpc
from common.pb.shop.v1 import query_service_pb2 as qpb
from common.pb.shop.v1 import query_service_pb2_grpc as qpb_grpc
from common.settings import Settings
from cqrs.instances import PrivatePostgres
from tests.faults.audit import (
    assert_no_partial_order,
    assert_ok_replies_took_effect_once,
    assert_stock_equals_the_events,
    settle,
    verify,
)
from tests.faults.load import CommandLoad, ReadProbe, seed, wait_visible
from tests.support.system import System

pytestmark = pytest.mark.faults


async def test_postgres_stopped_and_restarted_under_load(
    settings: Settings, private_postgres: PrivatePostgres, tmp_path: Path
) -> None:
    on_private = dataclasses.replace(settings, database_url=private_postgres.url)
    system = System(on_private, tmp_path)
    system.start_all()
    try:
        async with (
            grpc.aio.insecure_channel(system.write) as write_channel,
            grpc.aio.insecure_channel(system.read) as read_channel,
        ):
            write = cpb_grpc.CommandServiceStub(write_channel)
            read = qpb_grpc.QueryServiceStub(read_channel)
            made = await seed(write, products=20, customers=10)
            await wait_visible(read, made.token)
            stop = asyncio.Event()
            load = CommandLoad(write, made, rate=60, retry=True)
            baseline = ReadProbe(read, made, qpb.SOURCE_WRITE_MODEL)
            projection = ReadProbe(read, made, qpb.SOURCE_PROJECTION)
            tasks = [asyncio.create_task(t.run(stop)) for t in (load, baseline, projection)]
            await asyncio.sleep(1.0)
            down_at = time.monotonic()
            await asyncio.to_thread(private_postgres.stop)
            await asyncio.sleep(2.0)
            await asyncio.to_thread(private_postgres.start)
            up_at = time.monotonic()
            await asyncio.sleep(3.0)
            stop.set()
            await asyncio.gather(*tasks)

            assert set(load.codes()) == {"OK", "UNAVAILABLE"}, load.codes()
            assert set(baseline.codes()) == {"OK", "UNAVAILABLE"}, baseline.codes()
            down = [a for a in projection.answers if down_at + 0.5 < a.at < up_at]
            assert down and all(a.code == grpc.StatusCode.OK for a in down), (
                "Redis reads must go on while PostgreSQL is down"
            )
            print(
                f"\ncommands during the outage: {dict(load.codes())}; "
                f"write-model reads {dict(baseline.codes())}"
            )
            db = await asyncpg.connect(on_private.asyncpg_dsn)
            try:
                await assert_ok_replies_took_effect_once(db, write, load)
                await assert_no_partial_order(db)
                await assert_stock_equals_the_events(db)
            finally:
                await db.close()
            await settle(system, read, load.token)
        verify(system)
    finally:
        codes = system.stop_all()
        assert set(codes.values()) == {0}, f"{codes}\n{system.log_tails()}"
