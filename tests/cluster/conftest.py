"""Fixtures of the scale-out suite: local engines of our own (a PostgreSQL primary and its
streaming replica, a three-master Redis Cluster), started from the installed binaries (skipped with the reason where
there are none); the shared servers are never reconfigured."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from cqrs.instances import Lookup, PrivatePostgres, find_redis_server, free_port
from cqrs.instances.cluster import RedisClusterNodes, node_ports
from cqrs.instances.cluster import redis_cluster as start_cluster
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
def redis_cluster(redis_cluster_nodes: RedisClusterNodes) -> str:
    """A Redis Cluster of our own: three masters (``redis-cli --cluster create``); its
    ``redis+cluster://`` URL."""
    return redis_cluster_nodes.url


@pytest.fixture
def redis_cluster_nodes(scratch: Path) -> Iterator[RedisClusterNodes]:
    """Three masters of our own."""
    with _own_cluster(scratch, masters=3, replicas=0) as nodes:
        yield nodes


@pytest.fixture
def redis_cluster_with_replicas(scratch: Path) -> Iterator[RedisClusterNodes]:
    """Three masters with a replica each, of our own (the test may kill a master)."""
    with _own_cluster(scratch, masters=3, replicas=1) as nodes:
        yield nodes


@contextmanager
def _own_cluster(scratch: Path, masters: int, replicas: int) -> Iterator[RedisClusterNodes]:
    lookup = Lookup()
    if find_redis_server(lookup) is None or shutil.which("redis-cli") is None:
        pytest.skip("redis-server and redis-cli are not installed: the test needs its own")
    nodes = start_cluster(scratch, lookup, node_ports(masters * (1 + replicas)), replicas)
    try:
        nodes.start()
        yield nodes
    finally:
        nodes.stop()
