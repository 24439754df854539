"""Fixtures of the scale-out suite: local engines of our own (a PostgreSQL primary and its
streaming replica, a three-master Redis Cluster), started from the installed binaries (skipped with the reason where
there are none); the shared servers are never reconfigured."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cqrs.instances import Lookup, PrivatePostgres, find_redis_server, free_port
from cqrs.instances.cluster import RedisClusterNodes, node_ports
from cqrs.instances.cluster import redis_cluster as redis_cluster_nodes
from tests.support.private_postgres import started

pytestmark = pytest.mark.cluster


@dataclass(frozen=True, slots=True)
class Replicated:
    primary: PrivatePostgres
    replica: PrivatePostgres


@pytest.fixture
def replicated(scratch: Path) -> Iterator[Replicated]:
    """A primary of our own (the ``cqrs`` database migrated) and a streaming replica of it."""
    primary = started(scratch, "primary")
    replica: PrivatePostgres | None = None
    try:
        replica = primary.replica(scratch / "replica", scratch / "replica.log", free_port())
        replica.url = f"postgresql://postgres@127.0.0.1:{replica.port}/cqrs"
        replica.start()
        yield Replicated(primary, replica)
    finally:
        if replica is not None:
            replica.stop()
        primary.stop()


@pytest.fixture
def redis_cluster(scratch: Path) -> Iterator[str]:
    """A Redis Cluster of our own: three masters (``redis-cli --cluster create``); yields
    its ``redis+cluster://`` URL."""
    lookup = Lookup()
    if find_redis_server(lookup) is None or shutil.which("redis-cli") is None:
        pytest.skip("redis-server and redis-cli are not installed: the test needs its own")
    nodes = redis_cluster_nodes(scratch, lookup, node_ports())
    try:
        nodes.start()
        yield nodes.url
    finally:
        nodes.stop()


@pytest.fixture
def redis_cluster_with_replicas(scratch: Path) -> Iterator[RedisClusterNodes]:
    """Three masters with a replica each, of our own (the test may kill a master)."""
    lookup = Lookup()
    if find_redis_server(lookup) is None or shutil.which("redis-cli") is None:
        pytest.skip("redis-server and redis-cli are not installed: the test needs its own")
    nodes = redis_cluster_nodes(scratch, lookup, node_ports(6), replicas=1)
    try:
        nodes.start()
        yield nodes
    finally:
        nodes.stop()
