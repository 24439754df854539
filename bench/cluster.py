"""The cluster group: the Redis projections on a Redis Cluster beside one Redis, in one run.

A Redis Cluster of our own (three masters, started here, stopped at the end) and the
system's Redis, on the system's database:

- **projector**: catch-up of the three Redis projections from zero (the projector group's
  ``redis (3)`` run), on one Redis, then on the cluster;
- **reads**: every SOURCE_PROJECTION read scenario against a read server on one Redis, one
  on the cluster, and one on the cluster with every Redis projection spread over the three
  masters (``CQRS_REDIS_SPREAD``, three segments each: a get reads one shard, a list
  merges three), each started here (one worker), with the near-cache off so that every
  read reaches Redis: the ratio is what the cluster costs a read (issue target >= 0.8x).
  The cluster's projections are built by projectors of our own, each from a scratch copy
  of the log (the system's projector shares leases with any projector on its database).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import asyncpg

from bench import processes, projector
from bench.catalogue import ROOT, RPC_SCENARIOS
from bench.rpc import Run
from bench.scale_out import on_read_server
from common.db import drop_database
from common.positions import Position
from common.projection_checkpoints import RedisCheckpoints, spread_of
from common.redis_client import redis_client
from common.settings import Settings, to_environ

SCENARIOS = [n for n, s in RPC_SCENARIOS.items() if s.group == "reads" and s.source == "projection"]
# The projector runs measured on both (bench/projector.py's RUNS).
PROJECTOR_RUNS = ["redis (3)"]
_BUILD_TIMEOUT_S = 600.0
# Every Redis projection in three segments, each a keyspace of its own (one per master).
SPREAD: dict[str, Any] = {
    "projector_segments": "redis:products=3,redis:customers=3,redis:orders=3",
    "redis_spread": True,
}
# Where reads are measured beside one Redis, and the tag of their reports.
CLUSTER_LAYOUTS = {"cluster": "cluster", "cluster, spread": "spread"}


# Starts a Redis Cluster of our own in a directory, yields its redis+cluster:// URL and stops
# it on exit; FileNotFoundError when redis-server or redis-cli is missing
# (cqrs.instances.cluster.private_redis_cluster, given by the `cqrs bench` command: the bench
# runs below the command and does not import it).
ClusterFactory = Callable[[Path], AbstractContextManager[str]]


def measure(
    settings: Settings,
    run: Run,
    results: Path,
    serving: Callable[[str], bool],
    interrupted: Any,
    redis_cluster: ClusterFactory | None,
) -> dict[str, Any]:
    """The projector runs and the read scenarios on one Redis and on the cluster."""
    if redis_cluster is None:
        return {"skipped": "no way to start a Redis Cluster was given"}
    scratch = Path(tempfile.mkdtemp(prefix="cqrs-bench-cluster-"))
    try:
        with redis_cluster(scratch) as url:
            return _measure(settings, url, run, results, serving, interrupted)
    except FileNotFoundError as exc:  # redis-server or redis-cli is not installed
        return {"skipped": str(exc)}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _measure(
    settings: Settings,
    url: str,
    run: Run,
    results: Path,
    serving: Callable[[str], bool],
    interrupted: Any,
) -> dict[str, Any]:
    on_cluster = dataclasses.replace(settings, redis_url=url)
    outcome: dict[str, Any] = {"nodes": url, "projector": {}, "reads": {}}
    for where, chosen in (("one Redis", settings), ("cluster", on_cluster)):
        runs = asyncio.run(projector.measure(chosen, PROJECTOR_RUNS, rebuild=False))
        outcome["projector"][where] = runs["catch_up"]
    outcome["reads"]["one Redis"] = _reads(settings, "single", run, results, serving, interrupted)
    layouts = {
        "cluster": on_cluster,
        "cluster, spread": dataclasses.replace(
            on_cluster, redis_prefix=f"{settings.redis_prefix}spread", **SPREAD
        ),
    }
    for where, layout in layouts.items():
        # Each copy is built from a scratch copy of the log: on the system's database the
        # system's projector holds some of the Redis projections' leases.
        tag = CLUSTER_LAYOUTS[where]
        scratch_db = asyncio.run(projector.scratch_copy(layout, suffix=f"_bench_{tag}"))
        builder = _build_projections(scratch_db, results / f"cluster-projector-{tag}.log")
        try:
            outcome["reads"][where] = _reads(scratch_db, tag, run, results, serving, interrupted)
        finally:
            processes.stop(builder)
            asyncio.run(drop_database(scratch_db.asyncpg_dsn))
    single = outcome["reads"]["one Redis"]
    outcome["ratios"], outcome["spread_ratios"] = (
        {name: _ratio(outcome["reads"][where].get(name), single[name]) for name in single}
        for where in layouts
    )
    return outcome


def _build_projections(settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    """A projector building the Redis projections on ``settings``' Redis (the cluster) from
    the system's log, returned once they cover its head (it goes on following)."""
    env = {**os.environ, **to_environ(dataclasses.replace(settings, projector_metrics_port=0))}
    argv = [sys.executable, "-m", "cqrs", "projector", "run"]
    for name in projector.RUNS["redis (3)"]:
        argv += ["--only", name]
    with log.open("ab") as output:
        process = subprocess.Popen(
            argv, env=env, cwd=ROOT, stdout=output, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        asyncio.run(_until_built(settings, process))
    except BaseException:
        processes.stop(process)
        raise
    return process


async def _until_built(settings: Settings, process: subprocess.Popen[bytes]) -> None:
    conn = await asyncpg.connect(settings.asyncpg_dsn)
    client = redis_client(settings.redis_url, max_connections=2)
    try:
        head = await projector.log_head(conn) or Position(0, 0)
        checkpoints = RedisCheckpoints(client, settings.redis_prefix, shards=spread_of(settings))
        deadline = time.monotonic() + _BUILD_TIMEOUT_S
        while True:
            found = await checkpoints.read()
            if len(found) == 3 and all(p >= head for p in found.values()):
                return
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("cqrs bench: the projector did not build the cluster's copy")
            await asyncio.sleep(0.2)
    finally:
        await client.aclose()
        await conn.close()


def _reads(
    settings: Settings,
    tag: str,
    run: Run,
    results: Path,
    serving: Callable[[str], bool],
    interrupted: Any,
) -> dict[str, Any]:
    uncached = dataclasses.replace(settings, near_cache_documents=0)
    reports = f"cluster-reads-{tag}"
    return on_read_server(uncached, 1, SCENARIOS, run, results, reports, serving, interrupted)


def _ratio(cluster: dict[str, Any] | None, single: dict[str, Any]) -> float | None:
    if cluster is None or not single["rps"]:
        return None
    return float(cluster["rps"] / single["rps"])
