"""Which segment owns an aggregate, and how many segments each consumer is split into
(``CQRS_PROJECTOR_SEGMENTS``): shared by the projector (:mod:`projector.segments`) and the
readers of a Redis projection spread over one keyspace per segment
(:mod:`common.redis_keys`)."""

from __future__ import annotations

import zlib

ALL = "*"


def segment_of(aggregate_id: str, count: int) -> int:
    """The segment of ``aggregate_id`` among ``count`` (CRC-32 of its text: the same in
    every process and every Python, unlike ``hash``)."""
    return zlib.crc32(aggregate_id.encode()) % count


def parse_segments(text: str) -> dict[str, int]:
    """``CQRS_PROJECTOR_SEGMENTS``: ``name=S`` pairs, comma separated (``*`` = every
    projection). ``ValueError`` on anything else."""
    found: dict[str, int] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        name, eq, count = part.partition("=")
        name = name.strip()
        if not eq or not name or not count.strip().isdigit():
            raise ValueError(f"CQRS_PROJECTOR_SEGMENTS: {part!r} is not name=count")
        value = int(count)
        if not 1 <= value <= 64:
            raise ValueError(f"CQRS_PROJECTOR_SEGMENTS: {name} = {value}, expected 1..64")
        found[name] = value
    return found


def redis_shards(text: str, spread: bool, families: tuple[str, ...]) -> dict[str, int]:
    """Over how many keyspaces each Redis projection (``products`` ...) is spread: its
    segment count in ``text`` (``CQRS_PROJECTOR_SEGMENTS``) when ``spread``
    (``CQRS_REDIS_SPREAD``), else 1 (one keyspace, its segments' checkpoints in it)."""
    wanted = parse_segments(text)
    default = wanted.get(ALL, 1)
    return {f: wanted.get(f"redis:{f}", default) if spread else 1 for f in families}
