"""projector.segments: the split setting, and an aggregate's segment the same everywhere."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path

import pytest

from common.projection_checkpoints import segment_parts
from projector.projections import ALL_PROJECTIONS
from projector.segments import (
    Segment,
    all_segments,
    base_name,
    counts_for,
    parse_segments,
    segment_of,
)

IDS = [str(uuid.UUID(int=n * 7919 + 13)) for n in range(2000)]


def test_every_id_has_exactly_one_segment_and_they_share_the_work() -> None:
    segments = all_segments(4)
    for doc_id in IDS[:200]:
        assert sum(s.owns(doc_id) for s in segments) == 1
    spread = Counter(segment_of(i, 4) for i in IDS)
    assert set(spread) == {0, 1, 2, 3}
    assert min(spread.values()) > 0.2 * len(IDS)  # 25 % each, give or take


@pytest.mark.parametrize("seed", ["1", "2"])
def test_the_segment_of_an_id_does_not_depend_on_the_process(seed: str) -> None:
    """Two processes must agree on every id (Python's own ``hash`` of a str would not:
    it is salted per process)."""
    code = (
        "import sys; from projector.segments import segment_of; "
        "print(','.join(str(segment_of(i, 8)) for i in sys.argv[1:]))"
    )
    shown = subprocess.run(
        [sys.executable, "-c", code, *IDS[:50]],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": seed, "PATH": ""},
        cwd=Path(__file__).parents[2],
    ).stdout.strip()
    assert shown == ",".join(str(segment_of(i, 8)) for i in IDS[:50])


def test_names_and_labels() -> None:
    segment = Segment(1, 4)
    assert segment.name("redis:orders") == "redis:orders#1/4"
    assert base_name("redis:orders#1/4") == "redis:orders"
    assert segment_parts("redis:orders#1/4") == ("redis:orders", "1/4")
    assert base_name("pg:analytics") == "pg:analytics"
    assert segment_parts("pg:analytics") == ("pg:analytics", "")
    with pytest.raises(ValueError):
        Segment(4, 4)


def test_the_setting() -> None:
    assert parse_segments("") == {}
    assert parse_segments(" redis:orders=4 , pg:orders=2,") == {"redis:orders": 4, "pg:orders": 2}
    counts = counts_for("*=2,redis:orders=4", ALL_PROJECTIONS)
    assert counts["redis:orders"] == 4
    assert counts["pg:products"] == 2
    assert counts_for("", ALL_PROJECTIONS) == dict.fromkeys(ALL_PROJECTIONS, 1)
    for bad in ("redis:orders", "redis:orders=x", "redis:orders=0", "redis:orders=65", "=3"):
        with pytest.raises(ValueError, match="CQRS_PROJECTOR_SEGMENTS"):
            parse_segments(bad)
    with pytest.raises(ValueError, match="pg:analytics cannot be split"):
        counts_for("pg:analytics=2", ALL_PROJECTIONS)
    with pytest.raises(ValueError, match="redis:order cannot be split"):
        counts_for("redis:order=2", ALL_PROJECTIONS)  # a typo is refused, not ignored
