"""NATS JetStream helpers for the relay's tests: unique stream names, reading a stream
back whole, comparing it with the event log, deleting it."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import nats
import nats.js.errors
import orjson

from projector.relay import headers as h

NATS_URL = os.environ.get("CQRS_TEST_NATS_URL", "nats://127.0.0.1:4222")


@dataclass(frozen=True, slots=True)
class StreamNames:
    stream: str
    prefix: str


def unique_stream() -> StreamNames:
    tag = uuid.uuid4().hex[:10]
    return StreamNames(f"CQRS_TEST_{tag.upper()}", f"test.{tag}.events")


@dataclass(frozen=True, slots=True)
class Relayed:
    """One message of the stream."""

    stream_seq: int
    subject: str
    headers: dict[str, str]
    body: dict[str, Any]


async def _quiet(exc: Exception) -> None:
    """nats-py logs every connection error at ERROR with a traceback by default."""


@contextlib.asynccontextmanager
async def connected(url: str = NATS_URL) -> AsyncIterator[Any]:
    nc = await nats.connect(url, allow_reconnect=False, connect_timeout=2, error_cb=_quiet)
    try:
        yield nc
    finally:
        await nc.close()


async def read_stream(stream: str, url: str = NATS_URL) -> list[Relayed]:
    """Every message of ``stream``, in stream order."""
    async with connected(url) as nc:
        js = nc.jetstream(timeout=10)
        try:
            info = await js.stream_info(stream)
        except nats.js.errors.NotFoundError:
            return []
        found: list[Relayed] = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            try:
                msg = await js.get_msg(stream, seq)
            except nats.js.errors.NotFoundError:  # deleted
                continue
            assert msg.data is not None
            found.append(
                Relayed(int(msg.seq or seq), str(msg.subject), dict(msg.headers or {}),
                        orjson.loads(msg.data))
            )  # fmt: skip
        return found


async def delete_stream(stream: str, url: str = NATS_URL) -> None:
    with contextlib.suppress(Exception):
        async with connected(url) as nc:
            js = nc.jetstream(timeout=10)
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await js.delete_stream(stream)


async def stream_count(stream: str, url: str = NATS_URL) -> int:
    async with connected(url) as nc:
        info = await nc.jetstream(timeout=10).stream_info(stream)
        return int(info.state.messages)


async def assert_exactly_once(pool: asyncpg.Pool, relayed: list[Relayed]) -> None:
    """The stream holds every event of the log exactly once (by event id), and each
    aggregate's events in version order without a gap."""
    rows = await pool.fetch(
        "SELECT seq, aggregate_id::text AS aggregate_id, aggregate_version FROM events"
    )
    wanted = {h.event_id(r["seq"]) for r in rows}
    ids = [m.headers[h.MSG_ID] for m in relayed]
    duplicates = len(ids) - len(set(ids))
    assert duplicates == 0, f"{duplicates} duplicates in the stream"
    missing = wanted - set(ids)
    assert not missing, f"{len(missing)} events missing from the stream, e.g. {sorted(missing)[:5]}"
    extra = set(ids) - wanted
    assert not extra, f"{len(extra)} messages that are not events: {sorted(extra)[:5]}"
    versions: dict[str, list[int]] = defaultdict(list)
    for m in relayed:
        versions[m.body["aggregate_id"]].append(m.body["aggregate_version"])
    for aggregate, seen in versions.items():
        first = min(seen)
        assert seen == list(range(first, first + len(seen))), f"{aggregate}: order {seen}"
    expected: dict[str, int] = defaultdict(int)
    for r in rows:
        expected[r["aggregate_id"]] += 1
    assert {a: len(v) for a, v in versions.items()} == dict(expected)
