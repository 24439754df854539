"""ghz's JSON report, built from measured calls, and a check of its shape.

Durations are integer nanoseconds. ``fastest``, ``slowest``, the histogram and the
latency percentiles count successful calls only, as ghz does; ``average`` too.
``count`` is every call made; ``rps`` is count / total.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

PERCENTAGES = (10, 25, 50, 75, 90, 95, 99)
_HISTOGRAM_BUCKETS = 10


@dataclass
class Calls:
    """What a driver measured: one latency (ns) per successful call, status counts,
    error messages, the wall time of the run and the generator's own CPU time."""

    ok_latencies_ns: list[int] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    total_ns: int = 0
    generator_cpu_s: float = 0.0

    @property
    def count(self) -> int:
        return sum(self.statuses.values())

    def merge(self, other: Calls) -> None:
        self.ok_latencies_ns += other.ok_latencies_ns
        self.statuses.update(other.statuses)
        self.errors.update(other.errors)
        self.total_ns = max(self.total_ns, other.total_ns)
        self.generator_cpu_s += other.generator_cpu_s


def percentile(ordered: Sequence[int], percentage: float) -> int:
    """Nearest-rank percentile of an ascending list (0 for an empty one)."""
    if not ordered:
        return 0
    rank = max(1, math.ceil(percentage / 100 * len(ordered)))
    return ordered[rank - 1]


def build(
    name: str, calls: Calls, options: Mapping[str, Any], *, end_reason: str = "normal"
) -> dict[str, Any]:
    """The ghz JSON report of ``calls``."""
    ordered = sorted(calls.ok_latencies_ns)
    total = max(calls.total_ns, 1)
    report: dict[str, Any] = {
        "name": name,
        "endReason": end_reason,
        "options": dict(options),
        "date": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "count": calls.count,
        "total": calls.total_ns,
        "average": sum(ordered) // len(ordered) if ordered else 0,
        "fastest": ordered[0] if ordered else 0,
        "slowest": ordered[-1] if ordered else 0,
        "rps": calls.count / (total / 1e9),
        "errorDistribution": dict(calls.errors),
        "statusCodeDistribution": dict(calls.statuses),
        "latencyDistribution": [
            {"percentage": p, "latency": percentile(ordered, p)} for p in PERCENTAGES
        ],
        "histogram": histogram(ordered),
        "details": [],
    }
    return report


def histogram(ordered: Sequence[int]) -> list[dict[str, float | int]]:
    """ghz's histogram: equal-width buckets; ``mark`` is a bucket's upper edge in seconds."""
    if not ordered:
        return []
    low, high = ordered[0], ordered[-1]
    width = max((high - low) / _HISTOGRAM_BUCKETS, 1)
    counts = [0] * _HISTOGRAM_BUCKETS
    for latency in ordered:
        counts[min(int((latency - low) / width), _HISTOGRAM_BUCKETS - 1)] += 1
    return [
        {"mark": (low + width * (i + 1)) / 1e9, "count": n, "frequency": n / len(ordered)}
        for i, n in enumerate(counts)
    ]


_TOP_LEVEL: dict[str, type | tuple[type, ...]] = {
    "name": str,
    "endReason": str,
    "options": dict,
    "date": str,
    "count": int,
    "total": int,
    "average": int,
    "fastest": int,
    "slowest": int,
    "rps": (int, float),
    "errorDistribution": dict,
    "statusCodeDistribution": dict,
    "latencyDistribution": list,
    "histogram": list,
}


def problems(report: Mapping[str, Any]) -> list[str]:
    """Where ``report`` departs from ghz's JSON report format (empty if it does not)."""
    found = [
        f"{key}: expected {kind}, got {type(report.get(key)).__name__}"
        for key, kind in _TOP_LEVEL.items()
        if not isinstance(report.get(key), kind) or isinstance(report.get(key), bool)
    ]
    if found:
        return found
    try:
        datetime.fromisoformat(report["date"].replace("Z", "+00:00"))
    except ValueError:
        found.append(f"date: not RFC 3339: {report['date']!r}")
    percentages = [d.get("percentage") for d in report["latencyDistribution"]]
    if percentages != list(PERCENTAGES):
        found.append(f"latencyDistribution: percentages {percentages}")
    for entry in report["latencyDistribution"]:
        if not isinstance(entry.get("latency"), int):
            found.append(f"latencyDistribution: latency {entry.get('latency')!r} is not ns")
    for entry in report["histogram"]:
        if set(entry) != {"mark", "count", "frequency"}:
            found.append(f"histogram: entry {entry}")
    if sum(report["statusCodeDistribution"].values()) != report["count"]:
        found.append("statusCodeDistribution does not add up to count")
    ok = report["statusCodeDistribution"].get("OK", 0)
    if ok and not report["fastest"] <= report["average"] <= report["slowest"]:
        found.append("fastest <= average <= slowest does not hold")
    if sum(e["count"] for e in report["histogram"]) != ok:
        found.append("histogram does not count the successful calls")
    return found
