"""Connection-pool gauges, read when Prometheus scrapes (nothing per call).

``cqrs_db_pool_connections{pool,state}`` / ``cqrs_db_pool_max{pool}`` for asyncpg pools
and ``cqrs_redis_pool_connections{pool,state}`` / ``cqrs_redis_pool_max{pool}`` for
redis-py clients, ``state`` being ``in_use`` or ``idle``. A process registers its pools
when it builds its app (:func:`watch_pools`) and closes the returned handle when it
closes the app. One collector serves every registration (registered with the default
registry on the first, removed after the last), so tests that build several apps in one
process never register a metric twice; pools sharing a name are summed.

Scrapes run on the ops HTTP thread (common.ops_http): the pools are only read, and
only through sizes (asyncpg's getters; the lengths of redis-py's connection lists).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from typing import Any, Protocol

from prometheus_client import REGISTRY
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from common.metrics import DB_POOL_CONNECTIONS, DB_POOL_MAX, REDIS_POOL_CONNECTIONS, REDIS_POOL_MAX


class PgPool(Protocol):
    """What is read of an ``asyncpg.Pool``."""

    def get_size(self) -> int: ...

    def get_idle_size(self) -> int: ...

    def get_max_size(self) -> int: ...


class RedisClient(Protocol):
    """What is read of a ``redis.asyncio.Redis``: its connection pool."""

    @property
    def connection_pool(self) -> Any: ...


Sizes = tuple[int, int, int]  # in use, idle, max


def pg_sizes(pool: PgPool) -> Sizes:
    """(in use, idle, max) of an asyncpg pool."""
    size, idle = pool.get_size(), pool.get_idle_size()
    return max(size - idle, 0), idle, pool.get_max_size()


def redis_sizes(client: RedisClient) -> Sizes:
    """(in use, idle, max) of a redis-py client's pool (connection objects it holds); of a
    Redis Cluster client, summed over its nodes' pools."""
    nodes = getattr(client, "get_nodes", None)
    if nodes is not None:  # redis.asyncio.cluster.RedisCluster: a pool per node
        sizes = [_node_sizes(node) for node in nodes()]
        return (
            sum(s[0] for s in sizes),
            sum(s[1] for s in sizes),
            sum(s[2] for s in sizes),
        )
    pool = client.connection_pool
    in_use = len(getattr(pool, "_in_use_connections", ()))
    idle = len(getattr(pool, "_available_connections", ()))
    return in_use, idle, int(getattr(pool, "max_connections", 0) or 0)


def _node_sizes(node: Any) -> Sizes:
    opened = len(getattr(node, "_connections", ()))
    idle = len(getattr(node, "_free", ()))
    return max(opened - idle, 0), idle, int(getattr(node, "max_connections", 0) or 0)


class _Collector(Collector):
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._watches: list[PoolWatch] = []

    def add(self, watch: PoolWatch) -> bool:
        """Add ``watch``; True if it is the first (register the collector)."""
        with self._lock:
            self._watches.append(watch)
            return len(self._watches) == 1

    def remove(self, watch: PoolWatch) -> bool:
        """Remove ``watch``; True if none is left (unregister the collector)."""
        with self._lock:
            if watch in self._watches:
                self._watches.remove(watch)
                return not self._watches
            return False

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            watches = list(self._watches)
        pg: dict[str, list[int]] = {}
        redis: dict[str, list[int]] = {}
        for watch in watches:
            for name, pool in watch.pg.items():
                _add(pg, name, pg_sizes(pool))
            for name, client in watch.redis.items():
                _add(redis, name, redis_sizes(client))
        yield from _families(DB_POOL_CONNECTIONS, DB_POOL_MAX, "PostgreSQL", pg)
        yield from _families(REDIS_POOL_CONNECTIONS, REDIS_POOL_MAX, "Redis", redis)


def _add(into: dict[str, list[int]], name: str, sizes: Sizes) -> None:
    total = into.setdefault(name, [0, 0, 0])
    for i, value in enumerate(sizes):
        total[i] += value


def _families(
    connections: str, maximum: str, what: str, pools: dict[str, list[int]]
) -> Iterator[Metric]:
    used = GaugeMetricFamily(
        connections, f"{what} pool connections by state (in_use, idle)", labels=["pool", "state"]
    )
    most = GaugeMetricFamily(maximum, f"{what} pool size limit", labels=["pool"])
    for name, (in_use, idle, limit) in sorted(pools.items()):
        used.add_metric([name, "in_use"], in_use)
        used.add_metric([name, "idle"], idle)
        most.add_metric([name], limit)
    yield used
    yield most


_COLLECTOR = _Collector()
_REGISTERING = threading.Lock()


class PoolWatch:
    """The pools one app registered; :meth:`close` (idempotent) stops reporting them."""

    def __init__(self, pg: Mapping[str, PgPool], redis: Mapping[str, RedisClient]) -> None:
        self.pg = dict(pg)
        self.redis = dict(redis)

    def close(self) -> None:
        with _REGISTERING:
            if _COLLECTOR.remove(self):
                REGISTRY.unregister(_COLLECTOR)


def watch_pools(
    *, pg: Mapping[str, PgPool] | None = None, redis: Mapping[str, RedisClient] | None = None
) -> PoolWatch:
    """Report ``pg`` (asyncpg pools) and ``redis`` (clients) by pool name until the
    handle is closed."""
    watch = PoolWatch(pg or {}, redis or {})
    with _REGISTERING:
        if _COLLECTOR.add(watch):
            REGISTRY.register(_COLLECTOR)
    return watch
