"""h2load (Debian's nghttp2-client) as a load generator: a C client, far cheaper per call
than a Python one, so more of a 2-core machine is left to the server under test.

It sends one fixed body (the gRPC frame of the scenario's first request): ``0x00``,
a 4-byte big-endian length, the message. h2load sees HTTP statuses only (a gRPC error
is HTTP 200 plus a ``grpc-status`` trailer), so the gRPC status of every call comes
from the server's own ``cqrs_rpc_total{method,code}`` counters, read before and after
(:class:`ServerCounters`); latencies come from h2load's per-request log.
"""

from __future__ import annotations

import math
import random
import resource
import shutil
import struct
import subprocess
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from bench.drivers.builtin import Load
from bench.report import Calls


def available() -> bool:
    return shutil.which("h2load") is not None


def grpc_frame(message: bytes) -> bytes:
    """A length-prefixed, uncompressed gRPC message."""
    return b"\x00" + struct.pack(">I", len(message)) + message


class ServerCounters:
    """What a server's ``/metrics`` says of one method: ``cqrs_rpc_total`` by code, and the
    process's CPU seconds (``process_cpu_seconds_total``), summed over its workers' URLs."""

    def __init__(self, metrics_urls: Sequence[str], method: str) -> None:
        self._urls = list(metrics_urls)
        self._method = method

    def read(self) -> Counter[str]:
        return self.snapshot()[0]

    def snapshot(self) -> tuple[Counter[str], float]:
        codes: Counter[str] = Counter()
        cpu = 0.0
        for url in self._urls:
            url_codes, url_cpu = self._scrape(url)
            codes.update(url_codes)
            cpu += url_cpu
        return codes, cpu

    def _scrape(self, url: str) -> tuple[Counter[str], float]:
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        codes: Counter[str] = Counter()
        cpu = 0.0
        for family in text_string_to_metric_families(text):
            if family.name == "process_cpu_seconds":
                cpu = sum(sample.value for sample in family.samples)
            if family.name != "cqrs_rpc":  # the parser drops the counter's _total suffix
                continue
            for sample in family.samples:
                if sample.name.endswith("_total") and sample.labels.get("method") == self._method:
                    codes[sample.labels["code"]] += int(sample.value)
        return codes, cpu


def run(load: Load, counters: ServerCounters) -> Calls:
    """Drive ``load`` with h2load (its first body only)."""
    binary = shutil.which("h2load")
    if binary is None:
        raise RuntimeError("h2load is not installed (apt-get install nghttp2-client)")
    with tempfile.TemporaryDirectory(prefix="cqrs-h2load-") as tmp:
        body, log = Path(tmp) / "body", Path(tmp) / "requests.log"
        body.write_bytes(grpc_frame(load.bodies[0]))
        streams = max(1, math.ceil(load.concurrency / load.connections))
        argv = [
            binary,
            "-c", str(load.connections), "-m", str(streams),
            "-H", "content-type: application/grpc", "-H", "te: trailers",
            "-d", str(body), "--log-file", str(log),
        ]  # fmt: skip
        argv += ["-D", f"{load.duration_s:g}"] if load.duration_s else ["-n", str(load.total)]
        argv.append(f"http://{load.target}{load.method}")
        before_codes = counters.read()
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.monotonic()
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        elapsed = time.monotonic() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if done.returncode != 0:
            raise RuntimeError(f"h2load failed ({done.returncode}): {done.stderr or done.stdout}")
        calls = _from_log(log.read_text())
    codes = counters.read()
    codes.subtract(before_codes)
    # When its duration ends, h2load resets the streams still in flight: the server counts
    # those CANCELLED. They are the run's end, not failures (at most one per stream).
    in_flight = load.connections * streams
    codes["CANCELLED"] -= min(codes["CANCELLED"], in_flight)
    # The calls are those h2load saw answered; the server's counters say which failed
    # (it also counts calls answered after h2load stopped reading, hence the cap).
    answered = calls.ok_latencies_ns
    failed = Counter({c: n for c, n in codes.items() if c != "OK" and n > 0})
    ok = max(0, len(answered) - sum(failed.values()))
    if ok < len(answered):
        # h2load cannot tell which calls failed: keep an even sample as the OK calls'.
        calls.ok_latencies_ns = random.Random(0).sample(answered, ok)
    calls.statuses = Counter({"OK": ok, **failed})
    for code, n in failed.items():
        calls.errors[f"{code} (from the server's metrics)"] += n
    calls.total_ns = int(elapsed * 1e9)
    calls.generator_cpu_s = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return calls


def _from_log(text: str) -> Calls:
    """h2load's ``--log-file``: start (µs since the epoch), HTTP status, duration (µs)."""
    calls = Calls()
    for line in text.splitlines():
        fields = line.split("\t")
        if len(fields) < 3:
            continue
        if fields[1] == "200":
            calls.ok_latencies_ns.append(int(fields[2]) * 1000)
        else:
            calls.errors[f"HTTP {fields[1]}"] += 1
    return calls
