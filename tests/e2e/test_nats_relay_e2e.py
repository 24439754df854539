"""The relay as a real process: ``cqrs projector run --only nats:events`` SIGKILLed
mid-batch several times while commands commit; in the end the stream holds every event of
the log exactly once, each aggregate's events in order."""

from __future__ import annotations

import asyncio
import random
import signal
import sys
import uuid
from pathlib import Path

import asyncpg
import pytest

from common import events as ev
from common.positions import Position
from common.settings import Settings
from tests.support.events import NewEvent, Shop, append_events, eventually, now
from tests.support.nats import (
    NATS_URL,
    StreamNames,
    assert_exactly_once,
    read_stream,
    stream_count,
)
from tests.support.servers import env_for, start

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.nats,
    pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals"),
]

NAME = "nats:events"


_BULK = {
    "name": "bulk",
    "description": "",
    "price_cents": 1,
    "currency": "EUR",
    "category": "bulk",
    "stock": 10,
}


async def backlog(pool: asyncpg.Pool, transactions: int, per_transaction: int) -> None:
    """Products created in bulk: a backlog the relay works through in full batches."""
    for _ in range(transactions):
        async with pool.acquire() as conn, conn.transaction():
            events = [
                NewEvent(ev.PRODUCT, str(uuid.uuid4()), 1, ev.PRODUCT_CREATED, _BULK, now())
                for _ in range(per_transaction)
            ]
            await append_events(conn, events)


async def write_load(shop: Shop, stop: asyncio.Event) -> int:
    """Commands, one transaction each, until ``stop``; how many ran."""
    products = [await shop.create_product(stock=10_000_000) for _ in range(3)]
    done = 0
    while not stop.is_set():
        customer = await shop.create_customer()
        order = await shop.place_order(customer, [(products[done % 3], 1)])
        await shop.set_order_status(order, "CONFIRMED")
        await shop.update_product(products[done % 3], price_cents=100 + done)
        done += 1
        await asyncio.sleep(0.002)
    return done


async def checkpoint(pool: asyncpg.Pool) -> Position:
    row = await pool.fetchrow(
        "SELECT xid, seq FROM read.projection_checkpoints WHERE projection = $1", NAME
    )
    return Position(row["xid"], row["seq"]) if row else Position(0, 0)


async def test_sigkilled_relay_publishes_every_event_exactly_once(
    settings: Settings, names: StreamNames, tmp_path: Path
) -> None:
    env = env_for(
        settings,
        CQRS_NATS_URL=NATS_URL,
        CQRS_NATS_STREAM=names.stream,
        CQRS_NATS_SUBJECT_PREFIX=names.prefix,
        CQRS_PROJECTOR_BATCH_SIZE="200",
        CQRS_PROJECTOR_POLL_INTERVAL_MS="50",
        CQRS_LOG_LEVEL="INFO",
    )
    pool = await asyncpg.create_pool(settings.asyncpg_dsn, min_size=1, max_size=4)
    assert pool is not None
    rng = random.Random(7)
    try:
        await backlog(pool, transactions=20, per_transaction=500)
        stop = asyncio.Event()
        load = asyncio.create_task(write_load(Shop(pool), stop))
        kills = caught_ahead = 0
        try:
            for attempt in range(4):
                process = start(
                    ["projector", "run", "--only", NAME], env, tmp_path / f"p{attempt}.log"
                )
                seen = await stream_count_or_zero(names.stream)

                async def progressed(seen: int = seen) -> bool:
                    return await stream_count_or_zero(names.stream) > seen + 300

                await eventually(progressed, within=60, interval=0.02)
                # Best: kill it while the stream holds events its checkpoint does not cover
                # (published, acknowledged, not yet checkpointed); else somewhere in a batch.
                if not await published_ahead(pool, names.stream, within=3.0):
                    await asyncio.sleep(rng.uniform(0, 0.05))
                process.stop(signal.SIGKILL)
                # Counted once it is dead: between the look and the kill the relay may have
                # checkpointed what it had published.
                caught_ahead += await stream_ahead(pool, names.stream)
                kills += 1
                assert process.proc.returncode == -signal.SIGKILL, process.log()[-3000:]
        finally:
            stop.set()
            commands = await load
        assert commands > 0 and kills == 4

        # The last start finishes the job (and exits cleanly on SIGTERM).
        final = start(["projector", "run", "--only", NAME], env, tmp_path / "final.log")
        head_row = await pool.fetchrow(
            "SELECT xid::text::bigint AS xid, seq FROM events ORDER BY xid DESC, seq DESC LIMIT 1"
        )
        head = Position(head_row["xid"], head_row["seq"])

        async def caught_up() -> bool:
            return await checkpoint(pool) >= head

        await eventually(caught_up, within=120, interval=0.1)
        assert final.stop() == 0, final.log()[-3000:]
        log = "".join((tmp_path / f"p{i}.log").read_text(errors="replace") for i in range(4))
        log += final.log()
        assert "STOPPED on poison" not in log
        if caught_ahead:  # the next start found them in the stream and skipped them
            assert "the stream already holds" in log

        relayed = await read_stream(names.stream)
        total = int(await pool.fetchval("SELECT count(*) FROM events"))
        assert len(relayed) == total, f"{len(relayed)} messages for {total} events"
        await assert_exactly_once(pool, relayed)
        # Stream order is commit-safe log order: (xid, seq) never goes back.
        positions = [Position.from_checkpoint(m.headers["Cqrs-Position"]) for m in relayed]
        assert positions == sorted(positions)
    finally:
        await pool.close()


async def published_ahead(pool: asyncpg.Pool, stream: str, within: float) -> bool:
    """Wait until the stream holds more messages than the checkpoint covers events."""
    deadline = asyncio.get_running_loop().time() + within
    while asyncio.get_running_loop().time() < deadline:
        if await stream_ahead(pool, stream):
            return True
    return False


async def stream_ahead(pool: asyncpg.Pool, stream: str) -> bool:
    """Whether the stream holds more messages than the checkpoint covers events."""
    # The stream first: what commits or publishes meanwhile only makes it look behind.
    stored = await stream_count_or_zero(stream)
    at = await checkpoint(pool)
    covered = await pool.fetchval(
        "SELECT count(*) FROM events WHERE (xid, seq) <= ($1::bigint::text::xid8, $2)",
        at.xid,
        at.seq,
    )
    return bool(stored > covered)


async def stream_count_or_zero(stream: str) -> int:
    try:
        return await stream_count(stream)
    except Exception:  # not created yet
        return 0
