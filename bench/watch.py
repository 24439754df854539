"""Watch streams under load (``watch-idle``, ``watch-active``), against the running system.

- ``watch-idle``: ``IDLE_STREAMS`` streams, one per product (cycling over the products),
  spread over connections of ``PER_CONNECTION`` streams; each receives its snapshot and
  then waits. The read server's RSS (its ``process_resident_memory_bytes``) before and
  with them all open. Target: growth <= ``IDLE_RSS_TARGET_MB``.
- ``watch-active``: ``ACTIVE_STREAMS`` streams on as many products; ``UpdateProduct`` on
  them round robin at ``ACTIVE_RATE`` commands/s; the time from each command's reply to
  the stream showing its version (or a later one: several commands in one projector batch
  are one state on the stream, docs/reading.md). That includes the projector applying the
  batch, so it bounds "after the projection applied it" from above.
  Target: p99 <= ``ACTIVE_P99_TARGET_MS``; every update delivered.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import sys
import time
import urllib.request
from collections.abc import Callable
from typing import Any

import asyncpg
import grpc

from bench import watch_floor
from bench.catalogue import ROOT
from bench.paced import at_rate
from bench.processes import free_port
from bench.report import percentile
from common.pb.shop.v1 import command_service_pb2 as cpb
from common.pb.shop.v1 import command_service_pb2_grpc as cpb_grpc
from common.pb.shop.v1 import query_service_pb2 as qpb
from common.pb.shop.v1 import query_service_pb2_grpc as qpb_grpc

IDLE_STREAMS = 10_000
PER_CONNECTION = 200  # under the server's 250 streams per connection
IDLE_RSS_TARGET_MB = 200
ACTIVE_STREAMS = 1_000
ACTIVE_RATE = 200.0
ACTIVE_P99_TARGET_MS = 100.0
_OPEN_TIMEOUT_S = 120.0
_DELIVERY_GIVE_UP_S = 10.0
# Above any seeded price, and new on every run (an update to the price a product already
# has changes nothing, and nothing would be delivered): a delivery names its command.
_FIRST_PRICE = 50_000_000


async def product_ids(dsn: str, limit: int) -> list[str]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT id::text FROM products WHERE deleted_at IS NULL ORDER BY id LIMIT $1", limit
        )
    finally:
        await conn.close()
    return [r["id"] for r in rows]


def read_server_rss(metrics_port: int) -> float | None:
    """The read server's resident memory in MB, from its /metrics (None: no metrics)."""
    if not metrics_port:
        return None
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as reply:
        text = reply.read().decode()
    found = re.search(r"^process_resident_memory_bytes ([0-9.e+]+)$", text, re.M)
    return float(found[1]) / 1e6 if found else None


async def measure_idle(
    read: str, metrics_port: int, ids: list[str], streams: int = IDLE_STREAMS
) -> dict[str, Any]:
    """Open ``streams`` Watch streams and hold them; the read server's RSS growth, and
    beside it that of a bare grpc server holding as many (``bench/watch_floor.py``)."""

    def watch(channel: grpc.aio.Channel, n: int) -> Any:
        stub = qpb_grpc.QueryServiceStub(channel)
        return stub.WatchProduct(qpb.WatchProductRequest(id=ids[n % len(ids)]))

    before = read_server_rss(metrics_port)
    opened, open_s, during = await _hold(
        read, streams, watch, lambda: read_server_rss(metrics_port)
    )
    growth = during - before if during is not None and before is not None else None
    floor = await _floor(streams)
    result = {
        "streams": streams,
        "opened": opened,
        "open_s": open_s,
        "rss_before_mb": before,
        "rss_with_streams_mb": during,
        "rss_growth_mb": growth,
        "floor_growth_mb": floor,
        "errors": streams - opened,
    }
    shown = f"{growth:.0f} MB" if growth is not None else "n/a (no metrics port)"
    print(
        f"  watch-idle: {opened:,}/{streams:,} streams open in {open_s:.1f}s, RSS +{shown} "
        f"(a bare grpc server: +{floor:.0f} MB)",
        file=sys.stderr,
        flush=True,
    )
    return result


async def _hold(
    target: str,
    streams: int,
    call: Callable[[grpc.aio.Channel, int], Any],
    rss: Callable[[], float | None],
) -> tuple[int, float, float | None]:
    """Open ``streams`` calls to ``target``, each until its first message; the server's
    RSS (``rss()``) with them all open. Returns (opened, seconds to open, RSS)."""
    channels = _connections(target, streams)
    calls: list[Any] = []
    opened = 0
    started = time.monotonic()

    async def open_one(n: int) -> None:
        nonlocal opened
        calls.append(stream := call(channels[n // PER_CONNECTION], n))
        if await stream.read() is not grpc.aio.EOF:
            opened += 1

    try:
        async with asyncio.timeout(_OPEN_TIMEOUT_S):
            for chunk in range(0, streams, 500):  # a few hundred opening at once
                await asyncio.gather(
                    *(open_one(n) for n in range(chunk, min(streams, chunk + 500))),
                    return_exceptions=True,
                )
        open_s = time.monotonic() - started
        await asyncio.sleep(2.0)  # let the server settle (allocator, pending reads)
        during = rss()
    finally:
        for stream in calls:
            stream.cancel()
        await asyncio.gather(*(c.close() for c in channels))
    return opened, open_s, during


async def _floor(streams: int) -> float:
    """RSS growth (MB) of a bare grpc server holding ``streams`` idle streams."""
    port = free_port()
    server = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.watch_floor", str(port),
        stdout=asyncio.subprocess.PIPE, cwd=ROOT,
    )  # fmt: skip
    try:
        assert server.stdout is not None
        await asyncio.wait_for(server.stdout.readline(), 30)  # "ready"
        before = _rss_of(server.pid)

        def floor_call(channel: grpc.aio.Channel, n: int) -> Any:
            return channel.unary_stream(watch_floor.METHOD)(b"")

        _, _, during = await _hold(
            f"127.0.0.1:{port}", streams, floor_call, lambda: _rss_of(server.pid)
        )
        return (during or 0.0) - before
    finally:
        server.terminate()
        await server.wait()


def _rss_of(pid: int) -> float:
    """A process's resident memory in MB (Linux ``/proc``)."""
    with open(f"/proc/{pid}/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


async def measure_active(
    write: str,
    read: str,
    ids: list[str],
    seconds: float,
    rate: float = ACTIVE_RATE,
) -> dict[str, Any]:
    """``len(ids)`` streams; updates of those products at ``rate``; reply -> delivery."""
    replied: list[tuple[str, int, float]] = []  # (product, version its command made, when)
    arrived: dict[str, list[tuple[int, float]]] = {ident: [] for ident in ids}
    first_price = _FIRST_PRICE + random.randrange(10**12)
    failed = 0
    channels = _connections(read, len(ids))
    readers: list[asyncio.Task[None]] = []
    async with grpc.aio.insecure_channel(write) as write_channel:
        commands = cpb_grpc.CommandServiceStub(write_channel)
        try:
            ready = asyncio.Semaphore(0)
            for n, ident in enumerate(ids):
                stub = qpb_grpc.QueryServiceStub(channels[n // PER_CONNECTION])
                readers.append(asyncio.create_task(_follow(stub, ident, arrived, ready)))
            async with asyncio.timeout(_OPEN_TIMEOUT_S):
                for _ in ids:
                    await ready.acquire()
            started = time.monotonic()

            async def command(n: int) -> None:
                nonlocal failed
                ident, price = ids[n % len(ids)], first_price + n
                try:
                    reply = await commands.UpdateProduct(
                        cpb.UpdateProductRequest(id=ident, price_cents=price), timeout=10
                    )
                except grpc.aio.AioRpcError:
                    failed += 1
                    return
                replied.append((ident, reply.version, time.monotonic()))

            n = await at_rate(rate, seconds, command)
            elapsed = time.monotonic() - started
            for _ in range(int(_DELIVERY_GIVE_UP_S / 0.05)):  # the last deliveries
                if all(_shown(arrived[i], v) is not None for i, v, _ in replied):
                    break
                await asyncio.sleep(0.05)
        finally:
            for task in readers:
                task.cancel()
            await asyncio.gather(*readers, return_exceptions=True)
            await asyncio.gather(*(c.close() for c in channels))
    shown = [(_shown(arrived[i], v), t) for i, v, t in replied]
    lags = sorted(max(0, int((at - t) * 1e9)) for at, t in shown if at is not None)
    missing = len(replied) - len(lags)
    result = {
        "streams": len(ids),
        "rate_requested": rate,
        "rate_achieved": len(replied) / elapsed,
        "commands": n,
        "failed": failed,
        "delivered": len(lags),
        "missing": missing,
        "p50_ms": percentile(lags, 50) / 1e6 if lags else 0.0,
        "p99_ms": percentile(lags, 99) / 1e6 if lags else 0.0,
        "max_ms": (lags[-1] if lags else 0) / 1e6,
        "errors": failed + missing,
    }
    print(
        f"  watch-active: {len(ids):,} streams, {result['rate_achieved']:.0f} updates/s, "
        f"reply -> delivery p50 {result['p50_ms']:.1f} / p99 {result['p99_ms']:.1f} ms, "
        f"{missing} missing",
        file=sys.stderr,
        flush=True,
    )
    return result


def _connections(read: str, streams: int) -> list[grpc.aio.Channel]:
    """Enough channels for ``streams``, each its own connection (channels to one target
    otherwise share one, and its 250-stream bound would hold the rest back)."""
    own = [("grpc.use_local_subchannel_pool", 1)]
    return [
        grpc.aio.insecure_channel(read, options=own) for _ in range(-(-streams // PER_CONNECTION))
    ]


def _shown(arrivals: list[tuple[int, float]], version: int) -> float | None:
    """When a stream first showed ``version`` or a later one (its messages, in order)."""
    return next((at for shown, at in arrivals if shown >= version), None)


async def _follow(
    stub: qpb_grpc.QueryServiceStub,
    ident: str,
    arrived: dict[str, list[tuple[int, float]]],
    ready: asyncio.Semaphore,
) -> None:
    call = stub.WatchProduct(qpb.WatchProductRequest(id=ident))
    try:
        try:
            await call.read()  # the snapshot
        finally:
            ready.release()  # (a stream that failed to open shows as missing deliveries)
        while (message := await call.read()) is not grpc.aio.EOF:
            arrived[ident].append((message.product.version, time.monotonic()))
    except asyncio.CancelledError:
        call.cancel()
        raise
