"""The Redis projections and the near-cache on a Redis Cluster of three masters
(``redis+cluster://``), through the same code as on one Redis: after random command
programs the projector's Redis projections answer every get and list exactly as the
read models and the write model do, and a master emptied under them heals from the log.
Each also with every projection spread over the three masters (``CQRS_REDIS_SPREAD``, a
shard per segment): a master emptied or killed takes one shard of each, which heals alone."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import time
from typing import Any

import pytest
import redis
from hypothesis import given
from hypothesis import strategies as st
from redis.crc import key_slot

from common.redis_client import cluster_nodes, redis_client
from common.redis_keys import ProjectionKeys
from common.settings import Settings
from cqrs.instances.cluster import RedisClusterNodes
from projector.audit_record import AuditRecord
from tests.integration.test_equivalence import examples, run_example
from tests.support.programs import World, ops

pytestmark = pytest.mark.cluster

_WORLDS: dict[str, World] = {}

# Every Redis projection in three segments, each in a keyspace of its own.
SPREAD: dict[str, Any] = {
    "projector_segments": "redis:products=3,redis:customers=3,redis:orders=3",
    "redis_spread": True,
}
# (what the test runs on, the keys whose master the fault tests hit: the orders'.)
LAYOUTS = {
    "one keyspace each": ({}, None),
    "spread": (SPREAD, (1, 3)),
}


@examples(5)
@given(program=st.lists(ops, min_size=1, max_size=20))
def test_three_sources_agree_with_the_projections_on_a_redis_cluster(
    settings: Settings, redis_cluster: str, program: list[tuple[Any, ...]]
) -> None:
    on_cluster = dataclasses.replace(settings, redis_url=redis_cluster)
    world = _WORLDS.setdefault(settings.database_url, World())
    asyncio.run(run_example(on_cluster, world, program))
    # Spread: the three projections' hash tags fall on the three masters, each holding keys.
    for host, port in cluster_nodes(redis_cluster):
        node = redis.Redis(host=host, port=port)
        try:
            assert node.dbsize() > 0, f"no keys on {host}:{port}"
        finally:
            node.close()


@examples(5)
@given(program=st.lists(ops, min_size=1, max_size=20))
def test_three_sources_agree_with_each_projection_spread_over_the_three_masters(
    settings: Settings, redis_cluster: str, program: list[tuple[Any, ...]]
) -> None:
    on_cluster = dataclasses.replace(settings, redis_url=redis_cluster, **SPREAD)
    world = _WORLDS.setdefault(settings.database_url, World())
    asyncio.run(run_example(on_cluster, world, program))
    # One shard of each projection on each master (the shard tags' slots, one per range).
    for host, port in cluster_nodes(redis_cluster):
        node = redis.Redis(host=host, port=port)
        try:
            tags = {_tag(k) for k in node.scan_iter(match=f"{settings.redis_prefix}:*:active")}
        finally:
            node.close()
        assert sorted(t.partition("#")[0] for t in tags) == ["customers", "orders", "products"]


def _tag(key: bytes) -> str:
    return key.decode().partition("{")[2].partition("}")[0]


STORY: list[tuple[Any, ...]] = [
    ("create_product", "a", 500, 5, "EUR"),
    ("create_product", "b", 700, 3, "USD"),
    ("create_customer", 1),
    ("create_customer", 2),
    ("place_order", 0, [(0, 1), (1, 2)]),
    ("place_order", 1, [(1, 1)]),
    ("update_customer", 0, 3),
    ("order_status", 0, "confirm"),
]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_a_master_emptied_heals_from_the_log(
    settings: Settings, redis_cluster: str, layout: str
) -> None:
    """FLUSHALL on the master holding the orders projection (its hash tag's slot; spread: the
    one holding shard 1/3): the projector (started again by the next example) finds that
    projection (that shard) lost and rebuilds it there from the log, the other masters
    untouched; the three sources agree again."""
    changes, shard = LAYOUTS[layout]
    on_cluster = dataclasses.replace(settings, redis_url=redis_cluster, **changes)
    world = World()
    asyncio.run(run_example(on_cluster, world, STORY))
    keys = ProjectionKeys(settings.redis_prefix, "orders", shard)
    slot = key_slot(keys.active.encode())
    others = _actives(redis_cluster, settings.redis_prefix, skip=keys.tag)
    emptied = None
    for host, port in cluster_nodes(redis_cluster):
        node = redis.Redis(host=host, port=port)
        try:
            ranges = [r for r in node.cluster("slots") if r[0] <= slot <= r[1]]
            owner = ranges[0][2] if ranges else None
            if owner is not None and int(owner[1]) == port:
                assert node.dbsize() > 0
                node.flushall()
                emptied = port
        finally:
            node.close()
    assert emptied is not None, "no master owns the orders projection's slot"
    asyncio.run(run_example(on_cluster, world, STORY))  # rebuilt, then equal again
    # The shards on the other masters were not rebuilt: the same generations are active.
    if shard is not None:
        after = _actives(redis_cluster, settings.redis_prefix, skip=keys.tag)
        assert {k: v for k, v in after.items() if k in others} == others


def _actives(url: str, prefix: str, skip: str) -> dict[str, bytes]:
    """The active generation of every keyspace on the cluster but ``skip`` and those on its
    master (by hash tag)."""
    skipped = key_slot(skip.encode())
    found: dict[str, bytes] = {}
    for host, port in cluster_nodes(url):
        node = redis.Redis(host=host, port=port)
        try:
            mine = any(
                r[0] <= skipped <= r[1] and int(r[2][1]) == port for r in node.cluster("slots")
            )
            if mine:
                continue
            for key in node.scan_iter(match=f"{prefix}:*:active"):
                found[_tag(key)] = node.get(key)
        finally:
            node.close()
    assert found, "no keyspace on the other masters"
    return found


@pytest.mark.parametrize("layout", LAYOUTS)
def test_a_master_killed_its_replica_promoted_the_projections_go_on(
    settings: Settings, redis_cluster_with_replicas: RedisClusterNodes, layout: str
) -> None:
    """SIGKILL of the master owning the orders projection's slot (spread: shard 1/3's): its
    replica is promoted (the cluster fails over after the node timeout) and the projector
    and the read server go on there; the three sources agree after more commands."""
    changes, shard = LAYOUTS[layout]
    cluster = redis_cluster_with_replicas
    on_cluster = dataclasses.replace(settings, redis_url=cluster.url, **changes)
    world = World()
    asyncio.run(run_example(on_cluster, world, STORY))
    keys = ProjectionKeys(settings.redis_prefix, "orders", shard)
    slot = key_slot(keys.active.encode())
    owner = _owner(cluster, slot)
    victim = next(node for node in cluster.nodes if node.port == owner)
    victim.kill()
    deadline = time.monotonic() + 60
    while _owner(cluster, slot) == owner:  # until a replica of the victim owns the slot
        assert time.monotonic() < deadline, "no failover"
        time.sleep(0.2)
    cluster.wait_ok(timeout=60)
    asyncio.run(run_example(on_cluster, world, STORY))


def _owner(cluster: RedisClusterNodes, slot: int) -> int:
    """The port of the master serving ``slot``, as a live node sees it."""
    live = next(node for node in cluster.nodes if node.pid is not None)
    client = redis.Redis(host="127.0.0.1", port=live.port)
    try:
        return next(int(r[2][1]) for r in client.cluster("slots") if r[0] <= slot <= r[1])
    finally:
        client.close()


def test_callers_wait_for_a_connection_as_on_one_redis(redis_cluster: str) -> None:
    """More concurrent commands than connections: on a cluster as on one Redis, callers
    wait their turn (redis-py's cluster pools would fail them with MaxConnectionsError)."""

    async def many() -> list[bytes | None]:
        client = redis_client(redis_cluster, max_connections=1)
        try:
            await client.set("{waiting}:k", b"v")
            return await asyncio.gather(*(client.get("{waiting}:k") for _ in range(50)))
        finally:
            await client.aclose()

    assert asyncio.run(many()) == [b"v"] * 50


def test_the_audit_record_never_stops_the_event_loop_on_a_cluster(redis_cluster: str) -> None:
    """A MULTI pipeline on redis-py's cluster client queues each command from a thread while
    the caller's loop waits, and a projector hung for good there (the audit's record).
    The client refuses MULTI; the audit's record works on the cluster without it, and the
    loop keeps ticking meanwhile."""

    async def story() -> tuple[dict[str, dict[str, str]], float]:
        client = redis_client(redis_cluster, max_connections=2)
        ticks: list[float] = []

        async def ticker() -> None:
            while True:
                ticks.append(time.monotonic())
                await asyncio.sleep(0.001)

        beat = asyncio.create_task(ticker())
        try:
            with pytest.raises(redis.exceptions.RedisClusterException, match="MULTI"):
                client.pipeline(transaction=True)
            record = AuditRecord(client, "audit-on-cluster")
            for n in range(20):
                await record.start(f"redis:orders#{n % 4}/4", "host/1")
                await record.checked(f"redis:orders#{n % 4}/4", 3)
                await record.drift(f"redis:orders#{n % 4}/4", f"id{n}", "price: 1 != 2", False)
            found = await record.read(f"redis:orders#{n}/4" for n in range(4))
            await client.delete(*(f"audit-on-cluster:audit:redis:orders#{n}/4" for n in range(4)))
        finally:
            beat.cancel()
            await client.aclose()
        gaps = [b - a for a, b in itertools.pairwise(ticks)]
        return found, max(gaps, default=0.0)

    found, longest_stop = asyncio.run(story())
    assert set(found) == {f"redis:orders#{n}/4" for n in range(4)}
    assert {f["checked"] for f in found.values()} == {"3"}
    assert {f["drifts"] for f in found.values()} == {"1"}
    assert found["redis:orders#3/4"]["last_id"] == "id19"
    assert longest_stop < 1.0, longest_stop  # (the hang was forever; this is generous)
