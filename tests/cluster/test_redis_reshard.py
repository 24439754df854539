"""A live reshard: the orders projection's slot moves to another master while commands
commit, the projector applies batches and readers list and get orders from the projection.
The slot is moved with the steps ``redis-cli --cluster reshard`` takes (IMPORTING /
MIGRATING, MIGRATE of its keys, SETSLOT NODE), held half moved for a while; then
``redis-cli --cluster reshard`` itself moves every other slot of that master.

Every script declares its keys (:mod:`common.redis_scripts`), so Redis redirects a call
whose keys are moving (ASK, or TRYAGAIN while they are split between the two masters)
instead of letting it read a key already gone: no read is wrong, none says the projection
is lost (a reply a UNAVAILABLE "retry" is allowed while the slot is split), and the
projector never rebuilds it (its generation is unchanged)."""

from __future__ import annotations

import asyncio
import dataclasses
import random
import subprocess
import time
from typing import Any

import grpc
import pytest
import redis
from redis.crc import key_slot

from common.pb.shop.v1 import query_service_pb2 as qpb
from common.redis_keys import ProjectionKeys
from common.settings import Settings
from cqrs.instances.cluster import RedisClusterNodes
from tests.integration.test_equivalence import run_example
from tests.support.programs import World, run_program, running_system

pytestmark = pytest.mark.cluster

_SETUP: list[tuple[Any, ...]] = [
    *(("create_product", "books", 100 + i, 1_000_000, "EUR") for i in range(5)),
    *(("create_customer", i) for i in range(6)),
    *(("place_order", i % 6, [(i % 5, 1)]) for i in range(150)),
]
# What goes on committing during the reshard: orders placed and moved along.
_DURING: list[tuple[Any, ...]] = [
    *(("place_order", i % 6, [(i % 5, 1), ((i + 1) % 5, 2)]) for i in range(6)),
    *(("order_status", i, "confirm") for i in range(6)),
]
# How long the orders slot stays half moved, its keys on two masters.
_HALF_MOVED_S = 2.0
# Replies that would mean a script saw the projection half there: never acceptable.
_WRONG = ("lost", "damaged", "not built", "being rebuilt")


def test_a_live_reshard_moves_the_orders_projection_without_a_wrong_read(
    settings: Settings, redis_cluster_nodes: RedisClusterNodes
) -> None:
    cluster = redis_cluster_nodes
    # No near-cache: every read goes to Redis.
    on_cluster = dataclasses.replace(settings, redis_url=cluster.url, near_cache_documents=0)
    keys = ProjectionKeys(settings.redis_prefix, "orders")
    world = World()
    report = asyncio.run(_reshard_under_load(on_cluster, cluster, keys, world))
    assert report.moved_from != report.owner_after, "the slot did not move"
    assert not report.wrong, report.wrong[:5]
    assert report.reads > 50 and report.batches > 0, report
    assert report.generations == {report.generation}, "the projector rebuilt the orders"
    # And the sources agree afterwards (on the slot's new master).
    asyncio.run(run_example(on_cluster, world, _DURING))


@dataclasses.dataclass
class _Report:
    moved_from: int = 0
    owner_after: int = 0
    reads: int = 0
    batches: int = 0
    unavailable: int = 0
    generation: bytes = b""
    generations: set[bytes] = dataclasses.field(default_factory=set)
    wrong: list[str] = dataclasses.field(default_factory=list)


async def _reshard_under_load(
    settings: Settings, cluster: RedisClusterNodes, keys: ProjectionKeys, world: World
) -> _Report:
    report = _Report()
    slot = key_slot(keys.active.encode())
    async with running_system(settings) as (service, stub):
        await run_program(service, world, _SETUP)
        # Built and caught up: the token of the last command is served by the projection.
        await stub.ListOrders(
            qpb.ListOrdersRequest(source=qpb.SOURCE_PROJECTION, consistency_token=world.token),
            timeout=20,
        )
        report.generation = _get(cluster, keys.active)
        report.moved_from = _owner(cluster, slot)
        done = asyncio.Event()

        async def write() -> None:
            serial = 1000
            while not done.is_set():
                await run_program(service, world, _DURING, first_serial=serial)
                serial += len(_DURING)
                report.batches += 1
                report.generations.add(_get(cluster, keys.active))

        async def read() -> None:
            rng = random.Random(3)
            orders = list(world.orders)
            # The token of the set-up, already served: a read never waits for the projector
            # (which cannot commit to the slot while it is split) and goes to Redis at once.
            token = world.token
            while not done.is_set():
                try:
                    if rng.random() < 0.5:
                        reply = await stub.ListOrders(
                            qpb.ListOrdersRequest(
                                source=qpb.SOURCE_PROJECTION, consistency_token=token, page_size=20
                            ),
                            timeout=20,
                        )
                        if len(reply.orders) != 20:
                            report.wrong.append(f"a page of {len(reply.orders)} orders")
                    else:
                        ident = rng.choice(orders)
                        order = await stub.GetOrder(
                            qpb.GetOrderRequest(
                                id=ident, source=qpb.SOURCE_PROJECTION, consistency_token=token
                            ),
                            timeout=20,
                        )
                        if order.id != ident:
                            report.wrong.append(f"asked for {ident}, got {order.id!r}")
                except grpc.aio.AioRpcError as exc:
                    detail = exc.details() or ""
                    if exc.code() != grpc.StatusCode.UNAVAILABLE or any(
                        w in detail for w in _WRONG
                    ):
                        report.wrong.append(f"{exc.code().name}: {detail}")
                    report.unavailable += 1
                report.reads += 1

        tasks = [asyncio.create_task(write()), asyncio.create_task(read())]
        try:
            target = next(n.port for n in cluster.nodes if n.port != report.moved_from)
            await asyncio.to_thread(_migrate_slowly, cluster, slot, report.moved_from, target)
            await asyncio.to_thread(_reshard_all_slots_of, report.moved_from, target)
        finally:
            done.set()
            await asyncio.gather(*tasks)
        report.owner_after = _owner(cluster, slot)
        report.generations.add(_get(cluster, keys.active))
    return report


def _migrate_slowly(cluster: RedisClusterNodes, slot: int, source: int, target: int) -> None:
    """Move ``slot`` from the master on ``source`` to the one on ``target`` as
    ``redis-cli --cluster reshard`` does, pausing half way (its keys on both masters)."""
    with _client(source) as src, _client(target) as dst:
        source_id, target_id = _node_id(source), _node_id(target)
        dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
        src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
        half = int(src.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot)) // 2
        moved, paused = 0, False
        while keys := src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 20):
            src.execute_command("MIGRATE", "127.0.0.1", target, "", 0, 5000, "KEYS", *keys)
            moved += len(keys)
            if not paused and moved >= half:
                time.sleep(_HALF_MOVED_S)
                paused = True
        assert paused, "the slot held no keys"
        for node in cluster.nodes:
            with _client(node.port) as client:
                client.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)


def _reshard_all_slots_of(source: int, target: int) -> None:
    """``redis-cli --cluster reshard``: every slot left on ``source`` to ``target``."""
    count = sum(int(r[1]) - int(r[0]) + 1 for r in _slots(source) if int(r[2][1]) == source)
    subprocess.run(
        [
            "redis-cli", "--cluster", "reshard", f"127.0.0.1:{source}",
            "--cluster-from", _node_id(source), "--cluster-to", _node_id(target),
            "--cluster-slots", str(count), "--cluster-yes",
        ],
        check=True, capture_output=True, timeout=600,
    )  # fmt: skip


def _client(port: int) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=port)


def _node_id(port: int) -> str:
    with _client(port) as client:
        return str(client.execute_command("CLUSTER", "MYID").decode())


def _slots(port: int) -> list[Any]:
    with _client(port) as client:
        return list(client.execute_command("CLUSTER", "SLOTS"))


def _owner(cluster: RedisClusterNodes, slot: int) -> int:
    port = cluster.nodes[0].port
    return next(int(r[2][1]) for r in _slots(port) if int(r[0]) <= slot <= int(r[1]))


def _get(cluster: RedisClusterNodes, key: str) -> bytes:
    """``key``'s value, wherever it is (the cluster client follows MOVED and ASK)."""
    with redis.RedisCluster(host="127.0.0.1", port=cluster.nodes[0].port) as client:
        return bytes(client.get(key) or b"")
