"""Time travel on a long history (``as-of``), against the running system.

A product with ``EVENTS`` events (``UpdateProduct`` through the write server, once: a later
run finds it by name) and the projector's snapshots of it; then ``GetProductAsOf`` at
instants spread over its history, one call at a time and ``CONCURRENT`` at once, over gRPC;
beside it the same replays from the first event (``as_of(from_snapshot=False)``, in this
process on one connection, as the read server would run them without snapshots), so the
two are measured in one run. Target: a call <= ``TARGET_MS`` at p99 with snapshots.
"""

from __future__ import annotations

import asyncio
import sys
import time
from datetime import datetime
from typing import Any

import asyncpg
import grpc

from bench.report import percentile
from common import events as ev
from common.documents import timestamp
from common.pb.shop.v1 import command_service_pb2 as cpb
from common.pb.shop.v1 import command_service_pb2_grpc as cpb_grpc
from common.pb.shop.v1 import query_service_pb2 as qpb
from common.pb.shop.v1 import query_service_pb2_grpc as qpb_grpc
from read_server.history.as_of import as_of

EVENTS = 20_000
CALLS = 200
CONCURRENT = 8
TARGET_MS = 20.0
_SNAPSHOTS_TIMEOUT_S = 300.0


async def measure(
    write: str, read: str, dsn: str, every: int, events: int = EVENTS
) -> dict[str, Any]:
    """The as-of scenario on a product of ``events`` events (``every``: the system's
    ``CQRS_SNAPSHOT_EVERY``)."""
    conn = await asyncpg.connect(dsn)
    try:
        ident = await _long_history(conn, write, events)
        history = [
            r["occurred_at"]
            for r in await conn.fetch(
                "SELECT occurred_at FROM events WHERE aggregate_id = $1::uuid"
                " ORDER BY aggregate_version",
                ident,
            )
        ]
        times = history[3 :: max(1, len(history) // CALLS)][:CALLS]  # spread over it
        await _snapshots_written(conn, ident, every, events)
        async with grpc.aio.insecure_channel(read) as channel:
            stub = qpb_grpc.QueryServiceStub(channel)
            one = await _timed([lambda at=at: _rpc(stub, ident, at) for at in times], 1)
            many = await _timed([lambda at=at: _rpc(stub, ident, at) for at in times], CONCURRENT)
        sample = times[:: max(1, len(times) // 20)]
        replayed = await _timed([lambda at=at: _replay(conn, ident, at) for at in sample], 1)
    finally:
        await conn.close()
    result = {
        "events": events,
        "snapshot_every": every,
        "with_snapshots": one,
        f"with_snapshots_{CONCURRENT}_at_once": many,
        "from_first_event": replayed,
        "errors": 0,
    }
    print(
        f"  as-of on {events:,} events: p50 {one['p50_ms']:.1f} / p99 {one['p99_ms']:.1f} ms "
        f"(from the first event: p50 {replayed['p50_ms']:.0f} ms)",
        file=sys.stderr,
        flush=True,
    )
    return result


async def _long_history(conn: asyncpg.Connection, write: str, events: int) -> str:
    name = f"as-of bench ({events:,} events)"
    found = await conn.fetchval(
        "SELECT id::text FROM products WHERE name = $1 AND version >= $2 LIMIT 1", name, events
    )
    if found is not None:
        return str(found)
    print(f"  as-of: writing a product with {events:,} events (once)", file=sys.stderr, flush=True)
    async with grpc.aio.insecure_channel(write) as channel:
        stub = cpb_grpc.CommandServiceStub(channel)
        made = await stub.CreateProduct(
            cpb.CreateProductRequest(name=name, price_cents=1, currency="EUR", stock=1)
        )
        for n in range(2, events + 1):  # one aggregate: its commands serialize anyway
            await stub.UpdateProduct(cpb.UpdateProductRequest(id=made.id, price_cents=n))
    return str(made.id)


async def _snapshots_written(conn: asyncpg.Connection, ident: str, every: int, events: int) -> None:
    """Until the projector has snapshotted the whole history (none to wait for if off)."""
    if every <= 0 or events < every:
        return
    deadline = time.monotonic() + _SNAPSHOTS_TIMEOUT_S
    wanted = events - events % every
    while time.monotonic() < deadline:
        newest = await conn.fetchval(
            "SELECT max(aggregate_version) FROM read.snapshots WHERE aggregate_id = $1::uuid",
            ident,
        )
        if newest is not None and newest >= wanted:
            return
        await asyncio.sleep(0.5)
    raise SystemExit("cqrs bench: the projector did not write the snapshots (pg:snapshots)")


async def _rpc(stub: qpb_grpc.QueryServiceStub, ident: str, at: datetime) -> None:
    await stub.GetProductAsOf(qpb.GetProductAsOfRequest(id=ident, as_of=timestamp(at)), timeout=30)


async def _replay(conn: asyncpg.Connection, ident: str, at: datetime) -> None:
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        await as_of(conn, ev.PRODUCT, ident, at, from_snapshot=False)


async def _timed(calls: list[Any], at_once: int) -> dict[str, float]:
    """Run ``calls`` ``at_once`` at a time; latency percentiles in ms."""
    took: list[int] = []
    gate = asyncio.Semaphore(at_once)

    async def one(call: Any) -> None:
        async with gate:
            started = time.perf_counter_ns()
            await call()
            took.append(time.perf_counter_ns() - started)

    await asyncio.gather(*(one(c) for c in calls))
    took.sort()
    return {
        "calls": len(took),
        "p50_ms": percentile(took, 50) / 1e6,
        "p99_ms": percentile(took, 99) / 1e6,
        "max_ms": took[-1] / 1e6,
    }
