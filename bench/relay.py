"""Relay throughput: a real ``cqrs projector run --only nats:events`` catching up a seeded
log from the origin into a fresh JetStream stream, timed from the process's start until
its checkpoint covers the log's head (start-up included, like bench/projector.py).

    CQRS_DATABASE_URL=... python -m bench.relay [--nats nats://127.0.0.1:4222] [--batch 500]

The database must hold a seeded log (``cqrs seed``); the relay's checkpoint row is reset
first and the stream (uniquely named) is deleted afterwards, after checking it holds every
event exactly once.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import sys
import time
import uuid
from typing import Any

import asyncpg
import nats

from bench import process_cpu
from bench.catalogue import ROOT
from bench.projector import log_head, scratch_copy
from common.db import drop_database
from common.positions import Position
from common.settings import Settings, load_settings, to_environ
from projector.relay.nats_relay import NAME

_POLL_S = 0.05
DEFAULT_NATS_URL = "nats://127.0.0.1:4222"


async def measure(settings: Settings, batch_size: int) -> dict[str, float]:
    """The relay's catch-up on ``settings``' database, from the origin."""
    tag = uuid.uuid4().hex[:8]
    settings = dataclasses.replace(
        settings,
        nats_stream=f"BENCH_RELAY_{tag.upper()}",
        nats_subject_prefix=f"bench.{tag}.events",
        projector_batch_size=batch_size,
        projector_metrics_port=0,
    )
    conn = await asyncpg.connect(settings.asyncpg_dsn)
    try:
        await conn.execute("DELETE FROM read.projection_checkpoints WHERE projection = $1", NAME)
        head = await log_head(conn)
        events = int(await conn.fetchval("SELECT count(*) FROM events"))
        if head is None:
            raise SystemExit("the event log is empty: run `cqrs seed` first")
        env = {**os.environ, **to_environ(settings), "CQRS_LOG_LEVEL": "WARNING"}
        env["PYTHONPATH"] = str(ROOT)
        started = time.monotonic()
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "cqrs", "projector", "run", "--only", NAME, env=env, cwd=ROOT,
        )  # fmt: skip
        try:
            while True:
                found = await conn.fetchrow(
                    "SELECT xid, seq FROM read.projection_checkpoints WHERE projection = $1", NAME
                )
                if found is not None and Position(found["xid"], found["seq"]) >= head:
                    break
                if process.returncode is not None:
                    raise SystemExit(f"the projector exited with {process.returncode}")
                await asyncio.sleep(_POLL_S)
            seconds = time.monotonic() - started
            cpu = process_cpu.pid_seconds(process.pid)
            if cpu is None:
                raise SystemExit("the projector exited before its CPU time was read")
        finally:
            if process.returncode is None:
                process.terminate()
                await process.wait()
    finally:
        await conn.close()
    nc = await nats.connect(settings.nats_url)
    try:
        js = nc.jetstream(timeout=30)
        info = await js.stream_info(settings.nats_stream)
        stored = int(info.state.messages)
        await js.delete_stream(settings.nats_stream)
    finally:
        await nc.close()
    if stored != events:
        raise SystemExit(f"the stream holds {stored} messages for {events} events")
    return {
        "events": events,
        "seconds": seconds,
        "events_per_s": events / seconds,
        "cpu_s": cpu,
        "events_per_cpu_s": events / cpu if cpu else 0.0,
    }


async def measure_copy(settings: Settings) -> dict[str, Any]:
    """:func:`measure` on a scratch copy of the event log (``cqrs bench``'s ``relay``
    scenario: the system under test, and any relay of its own, are left alone), with
    ``CQRS_NATS_URL`` or the local NATS; ``{"skipped": why}`` when NATS does not answer."""
    url = settings.nats_url or DEFAULT_NATS_URL
    try:
        probe = await nats.connect(url, connect_timeout=2, max_reconnect_attempts=0)
    except Exception as exc:
        return {"skipped": f"NATS does not answer at {url} ({type(exc).__name__})"}
    await probe.close()
    scratch = await scratch_copy(dataclasses.replace(settings, nats_url=url))
    try:
        return await measure(scratch, settings.projector_batch_size)
    finally:
        await drop_database(scratch.asyncpg_dsn)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nats", default=os.environ.get("CQRS_NATS_URL") or DEFAULT_NATS_URL)
    parser.add_argument("--batch", type=int, default=500)
    args = parser.parse_args()
    settings = dataclasses.replace(load_settings(), nats_url=args.nats)
    result = asyncio.run(measure(settings, args.batch))
    print(
        f"relay catch-up: {result['events']:,} events in {result['seconds']:.2f}s = "
        f"{result['events_per_s']:,.0f} events/s (batch {args.batch}, process start included); "
        f"the relay process used {result['cpu_s']:.2f} CPU-s = "
        f"{result['events_per_cpu_s']:,.0f} events per CPU-second"
    )


if __name__ == "__main__":
    main()
