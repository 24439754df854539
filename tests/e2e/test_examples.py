"""The documented commands run as written: ``bin/cqrs`` from any directory, the examples with
the virtualenv's Python; ``examples/nats_consumer.py --max N`` takes exactly N events from a
real JetStream stream, prints them and acknowledges only those (the durable consumer resumes
after them)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.nats import NATS_URL, StreamNames, connected
from tests.support.servers import ROOT

pytestmark = pytest.mark.e2e


@pytest.mark.nats
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


def test_the_documented_commands_run_from_a_fresh_shell(tmp_path: Path) -> None:
    """`bin/cqrs` from another directory, and the examples with the virtualenv's Python (what
    `source .venv/bin/activate` gives a shell), with nothing else on PATH or in the env."""
    bare = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    done = subprocess.run(
        [str(ROOT / "bin" / "cqrs"), "--help"],
        cwd=tmp_path, env=bare, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0 and "projector" in done.stdout, done.stderr
    activated = {**bare, "PATH": f"{ROOT / '.venv' / 'bin'}:{bare['PATH']}"}
    done = subprocess.run(
        ["python", "examples/nats_consumer.py", "--help"],
        cwd=ROOT, env=activated, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0 and "--max" in done.stdout, done.stderr
