"""Freshness: the time from a command's reply to its visibility in each read source.

Commands (CreateProduct) flow at a steady rate; for a sample of them a probe reads
the new product from each source, every millisecond or so, until it is there, and
records the time from the command's reply to that read's answer (so a probe's own
round trip is included; the write model's figure is that round trip alone). Probes
poll after 1, 2, 4 ... up to 16 ms and sample a few commands a second, so they add
a few hundred reads a second at most, whatever the command rate.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

import grpc

from bench.paced import at_rate
from bench.report import percentile
from common.pb.shop.v1 import command_service_pb2 as cpb
from common.pb.shop.v1 import command_service_pb2_grpc as cpb_grpc
from common.pb.shop.v1 import query_service_pb2 as qpb
from common.pb.shop.v1 import query_service_pb2_grpc as qpb_grpc

SOURCES: dict[str, qpb.Source] = {
    "projection": qpb.SOURCE_PROJECTION,
    "read_model": qpb.SOURCE_READ_MODEL,
    "write_model": qpb.SOURCE_WRITE_MODEL,
}
PROBES_PER_S = 10  # sampled commands per second, whatever the command rate
FIRST_POLL_S = 0.001
MAX_POLL_S = 0.016
GIVE_UP_S = 10.0


async def measure(write: str, read: str, rate: float, seconds: float) -> dict[str, Any]:
    """Commands at ``rate`` per second for ``seconds`` against ``write``; freshness per source."""
    lags: dict[str, list[float]] = {name: [] for name in SOURCES}
    every = max(1, round(rate / PROBES_PER_S))
    probes: list[asyncio.Task[None]] = []
    sent = failed = 0
    async with (
        grpc.aio.insecure_channel(write) as write_channel,
        grpc.aio.insecure_channel(read) as read_channel,
    ):
        commands = cpb_grpc.CommandServiceStub(write_channel)
        queries = qpb_grpc.QueryServiceStub(read_channel)
        started = time.monotonic()

        async def command(n: int) -> None:
            nonlocal failed
            try:
                reply = await commands.CreateProduct(
                    cpb.CreateProductRequest(
                        name=f"fresh {n}", price_cents=100, currency="EUR", stock=1
                    ),
                    timeout=10,
                )
            except grpc.aio.AioRpcError:
                failed += 1
                return
            replied = time.monotonic()
            if n % every == 0:
                for name, source in SOURCES.items():
                    probe = _probe(queries, reply.id, source, replied, lags[name])
                    probes.append(asyncio.create_task(probe))

        sent = await at_rate(rate, seconds, command)
        await asyncio.gather(*probes)
        elapsed = time.monotonic() - started
    result: dict[str, Any] = {
        "rate_requested": rate,
        "rate_achieved": (sent - failed) / elapsed,
        "commands": sent,
        "failed": failed,
        "sources": {name: _summary(values) for name, values in lags.items()},
    }
    shown = ", ".join(
        f"{name} p50 {s['p50_ms']:.1f} / p99 {s['p99_ms']:.1f} ms"
        for name, s in result["sources"].items()
    )
    print(f"  freshness at {rate:g}/s: {shown}", file=sys.stderr, flush=True)
    return result


async def _probe(
    queries: qpb_grpc.QueryServiceStub,
    ident: str,
    source: qpb.Source,
    since: float,
    into: list[float],
) -> None:
    request = qpb.GetProductRequest(id=ident, source=source)
    delay = FIRST_POLL_S
    while time.monotonic() - since < GIVE_UP_S:
        try:
            await queries.GetProduct(request, timeout=5)
        except grpc.aio.AioRpcError:
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_POLL_S)
            continue
        into.append(time.monotonic() - since)
        return


def _summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(int(v * 1e9) for v in values)
    return {
        "samples": len(ordered),
        "p50_ms": percentile(ordered, 50) / 1e6,
        "p99_ms": percentile(ordered, 99) / 1e6,
        "max_ms": (ordered[-1] if ordered else 0) / 1e6,
    }
