"""A scale-out topology on one machine (``cqrs up --cluster``, the cluster tests): a
three-master Redis Cluster and a PostgreSQL primary with a streaming replica, all private
servers under one data directory, started from the installed binaries."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from cqrs.instances.base import START_TIMEOUT_S, InstanceError, Lookup, PrivateInstance
from cqrs.instances.network import free_port, port_free
from cqrs.instances.postgres import PrivatePostgres, find_postgres_bin
from cqrs.instances.redis_server import PrivateRedis, find_redis_server

# A cluster node's bus listens on its port + 10000, so its port is at most this.
_MAX_NODE_PORT = 55535
_LOWEST_NODE_PORT = 20000
_EPHEMERAL = Path("/proc/sys/net/ipv4/ip_local_port_range")
MASTERS = 3


def cluster_port(rng: random.Random | None = None) -> int:
    """A free port for a Redis Cluster node, its bus port (+10000) free too: both below the
    kernel's ephemeral range where they fit. Inside it, any outgoing connection may take
    the bus port between this check and the node's start (a CI run lost a cluster so:
    "bind: Address already in use" on the bus port 48370)."""
    rng = rng or random.Random()
    highest = min(_MAX_NODE_PORT, _ephemeral_low() - 1 - 10000)
    if highest < _LOWEST_NODE_PORT + 1000:  # the range starts too low to leave room below
        highest = _MAX_NODE_PORT
    for _ in range(500):
        port = rng.randint(_LOWEST_NODE_PORT, highest)
        if port_free(port) and port_free(port + 10000):
            return port
    raise InstanceError("no free port pair for a Redis Cluster node")


def _ephemeral_low() -> int:
    """The lowest port the kernel hands out to outgoing connections (Linux's default where
    it cannot be read)."""
    try:
        return int(_EPHEMERAL.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def node_ports(count: int = MASTERS) -> list[int]:
    """``count`` different free ports for cluster nodes (see :func:`cluster_port`)."""
    rng = random.Random()
    ports: list[int] = []
    while len(ports) < count:
        port = cluster_port(rng)
        if port not in ports:
            ports.append(port)
    return ports


@dataclass(slots=True)
class RedisClusterNodes:
    """``MASTERS`` redis-server processes joined into one cluster (no replicas)."""

    nodes: list[PrivateRedis]
    cli: str
    replicas: int = 0  # per master (then ``nodes`` holds masters x (1 + replicas))
    name: str = "Redis Cluster"
    data_dir: Path = field(default_factory=Path)
    url: str = ""  # redis+cluster://node,node,node

    def __post_init__(self) -> None:
        self.url = "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    def start(self) -> None:
        """Start the nodes; join them unless they already are a cluster (their nodes.conf
        kept from an earlier run); wait until the cluster serves every slot."""
        try:
            self._start()
        except BaseException:
            self.stop()  # the nodes already started
            raise

    def _start(self) -> None:
        for node in self.nodes:
            node.start()
        if _field(self._info(), "cluster_known_nodes") == "1":  # not joined yet
            addresses = [f"127.0.0.1:{n.port}" for n in self.nodes]
            created = subprocess.run(
                [self.cli, "--cluster", "create", *addresses, "--cluster-replicas",
                 str(self.replicas), "--cluster-yes"],
                capture_output=True, text=True, timeout=60, check=False,
            )  # fmt: skip
            if created.returncode != 0:
                raise InstanceError(f"redis-cli --cluster create failed:\n{created.stdout}")
        self.wait_ok()

    def wait_ok(self, timeout: float = START_TIMEOUT_S) -> None:
        """Until the cluster serves every slot (as one of the live nodes sees it)."""
        deadline = time.monotonic() + timeout
        while "cluster_state:ok" not in self._info():
            if time.monotonic() > deadline:
                raise InstanceError(f"the Redis Cluster did not come up:\n{self._info()}")
            time.sleep(0.2)

    def _info(self) -> str:
        live = next((n for n in self.nodes if n.pid is not None), self.nodes[0])
        return subprocess.run(
            [self.cli, "-p", str(live.port), "cluster", "info"],
            capture_output=True, text=True, timeout=10, check=False,
        ).stdout  # fmt: skip

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def _field(info: str, name: str) -> str:
    """One ``name:value`` line of ``CLUSTER INFO``."""
    for line in info.splitlines():
        key, _, value = line.strip().partition(":")
        if key == name:
            return value
    return ""


def redis_cluster(
    data_dir: Path, lookup: Lookup, ports: list[int], replicas: int = 0
) -> RedisClusterNodes:
    """Cluster-enabled redis-servers in ``data_dir`` on ``ports`` (not started): masters,
    and ``replicas`` for each (``redis-cli --cluster create`` assigns them)."""
    executable = find_redis_server(lookup)
    cli = shutil.which("redis-cli", path=lookup.path)
    if executable is None or cli is None:
        raise InstanceError("a Redis Cluster needs redis-server and redis-cli installed")
    nodes = []
    for i, port in enumerate(ports):
        home = data_dir / f"redis{i}"
        nodes.append(
            PrivateRedis(
                executable, home, data_dir / f"redis{i}.log", "127.0.0.1", port,
                persistent=False,
                options=(
                    "--cluster-enabled", "yes",
                    "--cluster-config-file", str((home / "nodes.conf").resolve()),
                    "--cluster-node-timeout", "2000",
                    # A replica may always take over a failed master (availability first;
                    # a projection is rebuilt from the log if anything was lost).
                    "--cluster-replica-validity-factor", "0",
                ),
            )
        )  # fmt: skip
    return RedisClusterNodes(nodes, cli, replicas, data_dir=data_dir)


@contextmanager
def private_redis_cluster(data_dir: Path) -> Iterator[str]:
    """Three cluster masters of our own in ``data_dir``, started and joined: yields their
    ``redis+cluster://`` URL and stops them on exit. FileNotFoundError (before starting
    anything) when redis-server or redis-cli is not installed."""
    lookup = Lookup()
    if find_redis_server(lookup) is None or shutil.which("redis-cli", path=lookup.path) is None:
        raise FileNotFoundError("redis-server or redis-cli is not installed")
    nodes = redis_cluster(data_dir, lookup, node_ports())
    nodes.start()
    try:
        yield nodes.url
    finally:
        nodes.stop()


@dataclass(slots=True)
class LocalCluster:
    """What ``cqrs up --cluster`` runs beside the processes."""

    primary: PrivatePostgres
    replica: PrivatePostgres
    redis: RedisClusterNodes

    @property
    def instances(self) -> list[PrivateInstance]:
        """In the order to stop them last-started first."""
        return [self.primary, self.replica, self.redis]


def cluster_ports(data_dir: Path) -> tuple[tuple[int, int], list[int]]:
    """The ports of the topology under ``data_dir``: chosen free on the first start and kept
    (``ports.json``), since the Redis nodes and the replica remember each other's."""
    saved = data_dir / "ports.json"
    if saved.exists():
        found = json.loads(saved.read_text())
        return (found["postgres"][0], found["postgres"][1]), list(found["redis"])
    redis_ports = node_ports()
    pg_ports = (free_port(), free_port())
    data_dir.mkdir(parents=True, exist_ok=True)
    saved.write_text(json.dumps({"postgres": list(pg_ports), "redis": redis_ports}))
    return pg_ports, redis_ports


def start_local_cluster(data_dir: Path, lookup: Lookup) -> LocalCluster:
    """Start (or start again) the topology under ``data_dir``; stops what it started if a
    part fails."""
    pg_ports, redis_ports = cluster_ports(data_dir)
    bin_dir = find_postgres_bin(lookup)
    if bin_dir is None:
        raise InstanceError("a PostgreSQL primary and replica need the server binaries installed")
    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:  # PostgreSQL runs as its own user, who must enter these
        for folder in (data_dir.parent, data_dir):
            folder.chmod(folder.stat().st_mode | 0o111)
    started: list[PrivateInstance] = []
    try:
        primary = PrivatePostgres(
            bin_dir, data_dir / "primary", data_dir / "primary.log", "127.0.0.1", pg_ports[0]
        )
        primary.url = f"postgresql://postgres@127.0.0.1:{pg_ports[0]}/cqrs"
        primary.start()
        started.append(primary)
        replica_dir = data_dir / "replica"
        if (replica_dir / "PG_VERSION").exists():  # made by an earlier run: it follows on
            replica = PrivatePostgres(
                bin_dir, replica_dir, data_dir / "replica.log", "127.0.0.1", pg_ports[1],
                name="PostgreSQL replica",
            )  # fmt: skip
        else:
            replica = primary.replica(replica_dir, data_dir / "replica.log", pg_ports[1])
        replica.url = f"postgresql://postgres@127.0.0.1:{pg_ports[1]}/cqrs"
        replica.start()
        started.append(replica)
        nodes = redis_cluster(data_dir, lookup, redis_ports)
        nodes.start()
        started.append(nodes)
        return LocalCluster(primary, replica, nodes)
    except BaseException:
        for instance in reversed(started):
            instance.stop()
        raise
