"""Redis loses everything under load (FLUSHDB; SIGKILL and restart, twice): the projector
notices on its own, rebuilds each projection into a new generation and switches it in.

Meanwhile projection reads answer UNAVAILABLE (or, from the read server's near-cache,
what the projection held at its last checkpoint), never NOT_FOUND for entities that
exist nor a half-built answer; they are back within 2 s of Redis answering again;
commands are not affected; ``cqrs projector verify`` is clean afterwards.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import grpc
import pytest
import redis

from common.pb.shop.v1 import command_service_pb2_grpc as cpb_grpc
from common.pb.shop.v1 import query_service_pb2_grpc as qpb_grpc
from common.settings import Settings
from cqrs.instances import PrivateRedis
from tests.faults.audit import settle, verify
from tests.faults.load import CommandLoad, ReadProbe, Seed, seed, wait_visible
from tests.support.system import System, running

pytestmark = pytest.mark.faults

# The target: projection reads are back this soon after Redis answers again.
RECOVERY_S = 2.0


@dataclasses.dataclass
class Running:
    system: System
    write: cpb_grpc.CommandServiceStub
    read: qpb_grpc.QueryServiceStub
    made: Seed


@pytest.fixture
def system(settings: Settings, private_redis: PrivateRedis, tmp_path: Path) -> Iterator[System]:
    on_private = dataclasses.replace(settings, redis_url=private_redis.url)
    with running(on_private, tmp_path) as system:
        yield system
    log = system.processes["projector"].log()
    assert "STOPPED on poison" not in log, log[-3000:]


@asynccontextmanager
async def seeded(system: System) -> AsyncIterator[Running]:
    async with (
        grpc.aio.insecure_channel(system.write) as write_channel,
        grpc.aio.insecure_channel(system.read) as read_channel,
    ):
        write = cpb_grpc.CommandServiceStub(write_channel)
        read = qpb_grpc.QueryServiceStub(read_channel)
        made = await seed(write, products=30, customers=15)
        await wait_visible(read, made.token)
        yield Running(system, write, read, made)


@asynccontextmanager
async def under_load(run: Running) -> AsyncIterator[tuple[CommandLoad, ReadProbe]]:
    stop = asyncio.Event()
    load, probe = CommandLoad(run.write, run.made, rate=80), ReadProbe(run.read, run.made)
    tasks = [asyncio.create_task(load.run(stop)), asyncio.create_task(probe.run(stop))]
    try:
        await asyncio.sleep(1.0)  # a steady state first
        yield load, probe
    finally:
        stop.set()
        await asyncio.gather(*tasks)


def assert_reads_honest(probe: ReadProbe) -> None:
    """Existing entities: answered, or UNAVAILABLE while the projection is not whole."""
    codes = probe.codes()
    assert set(codes) <= {"OK", "UNAVAILABLE"}, codes
    assert codes["OK"] > 100, codes


async def test_flushdb_under_load_heals_by_itself(system: System) -> None:
    async with seeded(system) as run:
        async with under_load(run) as (load, probe):
            client = redis.Redis.from_url(system.settings.redis_url)
            flushed_at = time.monotonic()
            client.flushdb()
            client.close()
            await asyncio.sleep(RECOVERY_S + 2)
        back = probe.back_after(flushed_at)
        print(f"\nreads back after FLUSHDB: {_seconds(back)}; answers {dict(probe.codes())}")
        assert all(s is not None and s <= RECOVERY_S for s in back.values()), back
        assert_reads_honest(probe)
        # Noticed by the read side: refused while empty, or the near-cache dropped what
        # it held (it may answer, as of its last checkpoint, until the switch).
        noticed = "near-cache" in system.processes["read"].log()
        assert probe.codes()["UNAVAILABLE"] > 0 or noticed, "no reader noticed the flush"
        assert set(load.codes()) == {"OK"}, load.codes()
        await settle(system, run.read, load.token)
    verify(system)
    assert "built from the event log and switched in" in system.processes["projector"].log()


async def test_redis_killed_and_restarted_twice_in_a_row(
    system: System, private_redis: PrivateRedis
) -> None:
    async with seeded(system) as run:
        async with under_load(run) as (load, probe):
            restarts: list[float] = []
            for pause in (1.0, 0.2):  # one outage, then a restart right after another
                private_redis.kill()
                await asyncio.sleep(pause)
                await asyncio.to_thread(private_redis.start)  # returns once it answers PING
                restarts.append(time.monotonic())
                await asyncio.sleep(RECOVERY_S + 1.5)
        for n, at in enumerate(restarts):
            until = restarts[n + 1] - 1.7 if n + 1 < len(restarts) else None
            back = probe.back_after(at, until)
            print(f"\nreads back after Redis restart {n + 1}: {_seconds(back)}")
            assert all(s is not None and s <= RECOVERY_S for s in back.values()), (n, back)
        assert_reads_honest(probe)
        assert set(load.codes()) == {"OK"}, load.codes()
        await settle(system, run.read, load.token)
    verify(system)


def _seconds(back: dict[str, float | None]) -> str:
    return ", ".join(f"{k} {v:.2f} s" if v is not None else f"{k} never" for k, v in back.items())
