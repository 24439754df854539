"""Processes dying or freezing under load.

- The write server is SIGKILLed twice while commands flow (retried by request id):
  no order is partial, every product's stock equals its events, every command
  answered OK took effect once and a retry returns exactly its reply.
- The leading projector is frozen (SIGSTOP) with a standby running: the standby
  takes over within the lease timeout; when the old leader wakes it stands by, and
  nothing is lost or applied twice (``verify`` is clean).
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import asyncpg
import grpc
import pytest

from common.pb.shop.v1 import command_service_pb2_grpc as cpb_grpc
from common.pb.shop.v1 import query_service_pb2_grpc as qpb_grpc
from common.settings import Settings
from projector.projections import ALL_PROJECTIONS
from tests.faults.audit import (
    assert_no_partial_order,
    assert_ok_replies_took_effect_once,
    assert_stock_equals_the_events,
    settle,
    verify,
)
from tests.faults.load import CommandLoad, seed, wait_visible
from tests.support.events import out_of_log_order
from tests.support.system import FREEZABLE, System

pytestmark = pytest.mark.faults

LEASE_TIMEOUT_S = 2.0


@pytest.mark.parametrize(
    ("rate", "workers"),
    [(150, 1), (3000, 32)],
    ids=["one-at-a-time", "32-in-flight-batched"],
)
async def test_write_server_sigkilled_mid_load(
    settings: Settings, tmp_path: Path, rate: float, workers: int
) -> None:
    """32 in flight: the write server groups them into shared transactions (group commit),
    so a kill lands mid-batch; no command may be half there, none answered OK lost."""
    # With 32 in flight, group commit on: the kills land in shared transactions.
    extra = {"CQRS_WRITE_BATCH_EXECUTORS": "4"} if workers > 1 else {}
    system = System(settings, tmp_path, extra)
    system.start_all()
    try:
        async with (
            grpc.aio.insecure_channel(system.write) as write_channel,
            grpc.aio.insecure_channel(system.read) as read_channel,
        ):
            write = cpb_grpc.CommandServiceStub(write_channel)
            made = await seed(write, products=10, customers=10)
            stop = asyncio.Event()
            load = CommandLoad(write, made, rate=rate, retry=True, workers=workers)
            task = asyncio.create_task(load.run(stop))
            for _ in range(2):
                await asyncio.sleep(1.0)
                system.kill("write")
                await asyncio.sleep(0.3)
                await asyncio.to_thread(system.start, "write")
            await asyncio.sleep(1.0)
            stop.set()
            await task
            assert set(load.codes()) == {"OK", "UNAVAILABLE"}, load.codes()
            db = await asyncpg.connect(settings.asyncpg_dsn)
            try:
                await assert_no_partial_order(db)
                await assert_stock_equals_the_events(db)
                await assert_ok_replies_took_effect_once(db, write, load)
                assert await out_of_log_order(db) == []
                if workers > 1:  # the kills did land among shared transactions
                    shared = await db.fetchval(
                        "SELECT count(*) FROM (SELECT xid FROM events GROUP BY xid"
                        " HAVING count(DISTINCT metadata->>'request_id') > 1) t"
                    )
                    assert shared > 0
            finally:
                await db.close()
            await settle(system, qpb_grpc.QueryServiceStub(read_channel), load.token)
        verify(system)
    finally:
        codes = system.stop_all()
        assert set(codes.values()) == {0}, f"{codes}\n{system.log_tails()}"


@pytest.mark.parametrize("fair_share", ["false", "true"], ids=["hot-standby", "fair-share"])
async def test_frozen_leader_is_replaced_by_the_standby(
    settings: Settings, tmp_path: Path, fair_share: str
) -> None:
    """Hot standby: the second process stands by for every consumer. Fair share: it leads
    half of them; the frozen process stops counting as a member, so the other may lead
    them all, and breaks the frozen leases."""
    lease_ms = str(int(LEASE_TIMEOUT_S * 1000))
    system = System(
        settings,
        tmp_path,
        {
            "CQRS_PROJECTOR_LEASE_TIMEOUT_MS": lease_ms,
            "CQRS_PROJECTOR_FAIR_SHARE": fair_share,
            **FREEZABLE,
        },
    )
    system.start("write")
    system.start("read")
    system.start("projector", "leader")
    try:
        async with (
            grpc.aio.insecure_channel(system.write) as write_channel,
            grpc.aio.insecure_channel(system.read) as read_channel,
        ):
            write = cpb_grpc.CommandServiceStub(write_channel)
            read = qpb_grpc.QueryServiceStub(read_channel)
            made = await seed(write, products=10, customers=5)
            await wait_visible(read, made.token)
            system.start("projector", "standby")
            await asyncio.sleep(1.0)  # the standby is polling for the leases

            stop = asyncio.Event()
            load = CommandLoad(write, made, rate=50)
            task = asyncio.create_task(load.run(stop))
            await asyncio.sleep(0.5)
            system.signal("leader", signal.SIGSTOP)
            frozen_at = time.monotonic()
            await asyncio.sleep(0.3)
            token = load.token  # written while the leader is frozen
            await wait_visible(read, token, within=LEASE_TIMEOUT_S + 10)
            took_over = time.monotonic() - frozen_at
            print(f"\nthe standby took over {took_over:.2f} s after the leader froze")
            assert took_over < LEASE_TIMEOUT_S + 5

            system.signal("leader", signal.SIGCONT)  # wakes up to find its sessions gone
            await asyncio.sleep(2.0)
            stop.set()
            await task
            assert set(load.codes()) == {"OK"}, load.codes()
            await settle(system, read, load.token)
        verify(system)
        assert "taking over" in system.processes["standby"].log()
        leader = system.processes["leader"].log()
        # Woken up, it found its leases gone and stood by (all of them, or those of its share).
        lost = [n for n in ALL_PROJECTIONS if f"{n}: lost the runner lock; standing by" in leader]
        assert lost == list(ALL_PROJECTIONS) if fair_share == "false" else lost, leader[-3000:]
    finally:
        codes = system.stop_all()
        assert set(codes.values()) == {0}, f"{codes}\n{system.log_tails()}"
