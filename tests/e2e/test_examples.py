"""The examples run as documented: ``examples/nats_consumer.py --max N`` takes exactly N
events from a real JetStream stream, prints them and acknowledges only those (the durable
consumer resumes after them)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator

import pytest

from tests.support.nats import NATS_URL, StreamNames, connected, delete_stream, unique_stream
from tests.support.servers import ROOT

pytestmark = [pytest.mark.e2e, pytest.mark.nats]


@pytest.fixture
async def names() -> AsyncIterator[StreamNames]:
    names = unique_stream()
    try:
        yield names
    finally:
        await delete_stream(names.stream)


async def test_nats_consumer_takes_exactly_max_events(names: StreamNames) -> None:
    async with connected() as nc:
        js = nc.jetstream(timeout=10)
        await js.add_stream(name=names.stream, subjects=[f"{names.prefix}.>"])
        for i in range(12):
            event = {"id": f"e{i}", "event_type": "ProductCreated", "aggregate_id": f"p{i}"}
            await js.publish(f"{names.prefix}.Product.ProductCreated", json.dumps(event).encode())

    def consume(most: int) -> list[str]:
        done = subprocess.run(
            [sys.executable, "examples/nats_consumer.py", "--url", NATS_URL,
             "--stream", names.stream, "--subjects", f"{names.prefix}.>",
             "--durable", "example-test", "--max", str(most)],
            cwd=ROOT, capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        return [line.split()[0] for line in done.stdout.splitlines()]

    assert consume(5) == [f"e{i}" for i in range(5)]
    async with connected() as nc:
        info = await nc.jetstream(timeout=10).consumer_info(names.stream, "example-test")
        assert info.delivered.stream_seq == 5 and info.ack_floor.stream_seq == 5, info
    assert consume(7) == [f"e{i}" for i in range(5, 12)]  # resumes after the acknowledged
