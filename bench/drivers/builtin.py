"""The built-in load generator: worker processes, each an asyncio gRPC client.

Requests are serialized once, up front; each worker keeps ``concurrency / workers``
calls in flight over ``connections / workers`` channels (one TCP connection each),
sends raw bytes (no client-side protobuf work), checks every reply's status and
records each successful call's latency. A Python client costs about as much CPU per
call as the server, so each worker also measures its own CPU time: the report says
what the generator itself spent per 1,000 calls.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import queue
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Event as MpEvent
from typing import Any

import grpc

from bench.report import Calls

_MAX_ERROR_MESSAGE = 200


@dataclass(frozen=True, slots=True)
class Load:
    """What to send, where, how hard and for how long."""

    target: str  # host:port
    method: str  # /package.Service/Method
    bodies: list[bytes]  # serialized requests, cycled through
    concurrency: int
    connections: int
    duration_s: float | None = None  # one of duration_s and total
    total: int | None = None
    timeout_s: float = 20.0
    workers: int = 2


def run(
    load: Load,
    *,
    on_progress: Callable[[int, float], None] | None = None,
    stop: Callable[[], bool] | None = None,
) -> Calls:
    """Drive ``load`` to its end (or until ``stop()`` turns true); every call's outcome.

    ``on_progress(calls so far, seconds so far)`` is called about once a second.
    """
    workers = max(1, min(load.workers, load.concurrency))
    context = multiprocessing.get_context("spawn")  # no fork of a process with gRPC threads
    halt = context.Event()
    results: Any = context.Queue()
    counters = [context.Value("q", 0, lock=False) for _ in range(workers)]
    shares = [_share(load, i, workers) for i in range(workers)]
    processes = [
        context.Process(target=_worker, args=(share, counters[i], halt, results), daemon=True)
        for i, share in enumerate(shares)
    ]
    for process in processes:
        process.start()
    started = time.monotonic()
    calls = Calls()
    pending = len(processes)
    try:
        while pending:
            if stop is not None and stop():
                halt.set()
            try:
                calls.merge(results.get(timeout=1.0))
                pending -= 1
            except queue.Empty:
                pass
            if on_progress is not None:
                on_progress(sum(c.value for c in counters), time.monotonic() - started)
    finally:
        halt.set()
        for process in processes:
            process.join(timeout=30)
            if process.is_alive():
                process.kill()
    return calls


def _share(load: Load, index: int, workers: int) -> Load:
    """Worker ``index``'s part of ``load`` (concurrency, connections, total split evenly)."""

    def part(n: int) -> int:
        return n // workers + (1 if index < n % workers else 0)

    return Load(
        target=load.target,
        method=load.method,
        bodies=load.bodies[index:] + load.bodies[:index],  # not all in lockstep
        concurrency=max(1, part(load.concurrency)),
        connections=max(1, part(load.connections)),
        duration_s=load.duration_s,
        total=part(load.total) if load.total is not None else None,
        timeout_s=load.timeout_s,
        workers=1,
    )


def _worker(load: Load, counter: Synchronized[int], halt: MpEvent, results: Any) -> None:
    before = resource.getrusage(resource.RUSAGE_SELF)
    calls = asyncio.run(_drive(load, counter, halt))
    after = resource.getrusage(resource.RUSAGE_SELF)
    calls.generator_cpu_s = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    results.put(calls)


async def _drive(load: Load, counter: Synchronized[int], halt: MpEvent) -> Calls:
    # A local subchannel pool: channels to one target would otherwise share a connection.
    options = [("grpc.use_local_subchannel_pool", 1)]
    channels = [
        grpc.aio.insecure_channel(load.target, options=options) for _ in range(load.connections)
    ]
    calls = Calls()
    loop = asyncio.get_running_loop()
    started = loop.time()
    ends_at = started + load.duration_s if load.duration_s is not None else None
    budget = [load.total if load.total is not None else -1]
    bodies = load.bodies
    next_body = [0]

    def more() -> bool:
        if halt.is_set() or (ends_at is not None and loop.time() >= ends_at):
            return False
        if budget[0] == 0:
            return False
        if budget[0] > 0:
            budget[0] -= 1
        return True

    async def caller(n: int) -> None:
        call = channels[n % len(channels)].unary_unary(load.method)
        while more():
            body = bodies[next_body[0] % len(bodies)]
            next_body[0] += 1
            sent = time.perf_counter_ns()
            try:
                await call(body, timeout=load.timeout_s)
            except grpc.aio.AioRpcError as exc:
                code = exc.code().name
                calls.statuses[code] += 1
                calls.errors[f"{code}: {(exc.details() or '')[:_MAX_ERROR_MESSAGE]}"] += 1
            else:
                calls.ok_latencies_ns.append(time.perf_counter_ns() - sent)
                calls.statuses["OK"] += 1
            counter.value += 1

    try:
        for channel in channels:  # connect first: setup is not part of the measurement
            await channel.channel_ready()
        started = loop.time()
        if ends_at is not None:
            ends_at = started + (load.duration_s or 0)
        await asyncio.gather(*(caller(n) for n in range(load.concurrency)))
    finally:
        for channel in channels:
            await channel.close()
    calls.total_ns = int((loop.time() - started) * 1e9)
    return calls
