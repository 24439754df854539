"""One shard of a spread Redis projection lost under load (every key under its hash tag
unlinked, as FLUSHALL on the master holding it would): its segment's runner rebuilds that
shard alone from the log, while the other shards keep answering; commands are not
affected; ``cqrs projector verify`` is clean afterwards."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import redis

from common.pb.shop.v1 import query_service_pb2 as qpb
from common.redis_keys import ProjectionKeys, glob_escape
from common.segmenting import segment_of
from common.settings import Settings
from cqrs.instances import PrivateRedis
from tests.faults.audit import settle, verify
from tests.faults.test_redis_loss import Running, seeded, under_load
from tests.support.system import System, running

pytestmark = pytest.mark.faults

SHARDS = 3
LOST = 1
BUILDING = "building it from the event log"


@pytest.fixture
def system(settings: Settings, private_redis: PrivateRedis, tmp_path: Path) -> Iterator[System]:
    spread = dataclasses.replace(
        settings,
        redis_url=private_redis.url,
        projector_segments=f"redis:orders={SHARDS}",
        redis_spread=True,
    )
    with running(spread, tmp_path) as system:
        yield system


async def test_a_lost_shard_is_rebuilt_alone_while_the_others_answer(system: System) -> None:
    async with seeded(system) as run:
        by_shard = {i: [o for o in run.made.orders if segment_of(o, SHARDS) == i] for i in range(3)}
        assert all(by_shard.values()), by_shard
        lost = ProjectionKeys(system.settings.redis_prefix, "orders", (LOST, SHARDS))
        async with under_load(run) as (load, _):
            client = redis.Redis.from_url(system.settings.redis_url)
            try:
                gone = list(client.scan_iter(match=glob_escape(lost.base) + ":*", count=1000))
                assert gone
                client.unlink(*gone)
            finally:
                client.close()
            codes = await _probe(run, by_shard, seconds=3.0)
        print(f"\nanswers by shard while shard {LOST} was rebuilt: {codes}")
        for i, found in codes.items():
            allowed = {"OK", "UNAVAILABLE"} if i == LOST else {"OK"}
            assert set(found) <= allowed, (i, found)
            assert found["OK"] > 0 or i == LOST, (i, found)
        assert set(load.codes()) == {"OK"}, load.codes()
        await settle(system, run.read, load.token)
        after = await _probe(run, by_shard, seconds=0.0)
        assert all(set(found) == {"OK"} for found in after.values()), after
    verify(system)
    log = system.processes["projector"].log()
    built = Counter(
        name
        for line in log.splitlines()
        if BUILDING in line
        for name in (f"redis:orders#{i}/{SHARDS}" for i in range(SHARDS))
        if f"{name}: " in line
    )
    # Each shard was built on the first start; only the lost one again.
    assert built == {f"redis:orders#{i}/{SHARDS}": 1 + (i == LOST) for i in range(SHARDS)}, built


async def _probe(
    run: Running, by_shard: dict[int, list[str]], seconds: float
) -> dict[int, Counter[str]]:
    """Gets of each shard's seeded orders from the projection, round after round for
    ``seconds`` (one round at least): the codes by shard."""
    codes: dict[int, Counter[str]] = {i: Counter() for i in by_shard}
    deadline = time.monotonic() + seconds
    while True:
        for i, ids in by_shard.items():
            for ident in ids:
                request = qpb.GetOrderRequest(id=ident, source=qpb.SOURCE_PROJECTION)
                try:
                    await run.read.GetOrder(request, timeout=2)
                    codes[i]["OK"] += 1
                except grpc.aio.AioRpcError as exc:
                    codes[i][exc.code().name] += 1
                    await asyncio.sleep(0.005)
        if time.monotonic() >= deadline:
            return codes
