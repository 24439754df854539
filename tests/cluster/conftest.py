"""Fixtures of the scale-out suite: local engines of our own (a PostgreSQL primary and its
streaming replica, a three-master Redis Cluster), started from the installed binaries (skipped with the reason where
there are none); the shared servers are never reconfigured."""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cqrs.instances import Lookup, PrivatePostgres, PrivateRedis, find_redis_server, free_port
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


def _cluster_port() -> int:
    """A free port for a cluster node: at most 55535, its bus port (+10000) free too."""
    rng = random.Random()
    for _ in range(200):
        port = rng.randint(20000, 55535)
        if all(_free(p) for p in (port, port + 10000)):
            return port
    raise RuntimeError("no free port pair for a Redis Cluster node")


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


@pytest.fixture
def redis_cluster(scratch: Path) -> Iterator[str]:
    """A Redis Cluster of our own: three masters (``redis-cli --cluster create``); yields
    its ``redis+cluster://`` URL."""
    executable = find_redis_server(Lookup())
    cli = shutil.which("redis-cli")
    if executable is None or cli is None:
        pytest.skip("redis-server and redis-cli are not installed: the test needs its own")
    nodes: list[PrivateRedis] = []
    try:
        for i in range(3):
            node = PrivateRedis(
                executable,
                scratch / f"redis{i}",
                scratch / f"redis{i}.log",
                "127.0.0.1",
                _cluster_port(),
                persistent=False,
                options=(
                    "--cluster-enabled", "yes",
                    "--cluster-config-file", str((scratch / f"redis{i}" / "nodes.conf").resolve()),
                    "--cluster-node-timeout", "2000",
                ),
            )  # fmt: skip
            node.start()
            nodes.append(node)
        addresses = [f"127.0.0.1:{n.port}" for n in nodes]
        created = subprocess.run(
            [cli, "--cluster", "create", *addresses, "--cluster-replicas", "0", "--cluster-yes"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert created.returncode == 0, created.stdout + created.stderr
        deadline = time.monotonic() + 30
        while True:
            info = subprocess.run(
                [cli, "-p", str(nodes[0].port), "cluster", "info"],
                capture_output=True, text=True, timeout=10,
            ).stdout  # fmt: skip
            if "cluster_state:ok" in info:
                break
            assert time.monotonic() < deadline, info
            time.sleep(0.2)
        yield "redis+cluster://" + ",".join(addresses)
    finally:
        for node in nodes:
            node.stop()
