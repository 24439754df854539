"""Segments: one consumer split into S parts by a stable hash of the aggregate id.

Segment ``i`` of ``S`` applies the events of the aggregates whose id hashes to ``i``
(:func:`segment_of`), so an aggregate's events stay in order in one segment, and keeps
its own checkpoint (``redis:orders#1/4``) and its own lease: the runners of a consumer's
segments are spread over the projector processes like any consumers (the fair share of
:mod:`projector.membership` counts segments).

Which consumers split (``CQRS_PROJECTOR_SEGMENTS``, e.g. ``redis:orders=4,pg:orders=4`` or
``*=4``; default 1 each, today's behaviour):

- the projections (Redis and PostgreSQL, every family). A document is one aggregate's,
  except what an order shows of its customer: events of an embedded aggregate (a
  ``CustomerUpdated``) reach every segment, and each rewrites the orders it owns.
- not ``pg:analytics`` (one fold over all aggregates: counts per day, top products), nor
  the outbound consumers (the NATS relay keeps the log's order in one stream, the webhook
  fan-out numbers deliveries per subscription, payments is cheap and waits on a provider).

Readers see one checkpoint per projection, the lowest of its segments' (kept with every
segment's commit, atomically): a consistency token is reached when every segment has
passed it. A copy is built whole by a rebuild and split when it is switched in, so
changing S is a rebuild into a new copy (the runners find their segment's checkpoint
missing and rebuild), never a reshuffle in place.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from common.events import StoredEvent
from common.projection_checkpoints import SEGMENT_SEPARATOR as SEPARATOR
from common.projection_checkpoints import segment_parts
from common.segmenting import ALL, parse_segments, segment_of

__all__ = [
    "ALL",
    "BuiltAlone",
    "Segment",
    "Split",
    "SplitConsumer",
    "all_segments",
    "base_name",
    "builds_alone",
    "counts_for",
    "parse_segments",
    "rebuild_name",
    "segment_of",
]


@dataclass(frozen=True, slots=True)
class Segment:
    """Segment ``index`` of ``count``."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if not 0 <= self.index < self.count:
            raise ValueError(f"segment {self.index} of {self.count}")

    def owns(self, aggregate_id: str) -> bool:
        return segment_of(aggregate_id, self.count) == self.index

    @property
    def label(self) -> str:
        """``1/4`` (the ``segment`` label of the metrics)."""
        return f"{self.index}/{self.count}"

    def name(self, base: str) -> str:
        """``redis:orders#1/4``: the checkpoint, lease and runner of this segment."""
        return f"{base}{SEPARATOR}{self.label}"


@dataclass(frozen=True, slots=True)
class Split:
    """What a segment of a projection reads: events of ``aggregate_type`` (the one it
    splits) only for the aggregates ``segment`` owns, other types' events all."""

    aggregate_type: str
    segment: Segment

    def keeps(self, event: StoredEvent) -> bool:
        return event.aggregate_type != self.aggregate_type or self.segment.owns(event.aggregate_id)


@runtime_checkable
class SplitConsumer(Protocol):
    """A consumer that may be one segment of a split one (``split`` None: it is not)."""

    @property
    def split(self) -> Split | None: ...


@runtime_checkable
class BuiltAlone(Protocol):
    """A consumer that may be a segment rebuilt alone (``builds_alone``), into a copy of its
    own, rather than with the whole (a shard of a spread Redis projection)."""

    @property
    def name(self) -> str: ...

    @property
    def builds_alone(self) -> bool: ...


def builds_alone(consumer: object) -> bool:
    """Whether ``consumer`` is a segment rebuilt alone (:class:`BuiltAlone`)."""
    return isinstance(consumer, BuiltAlone) and consumer.builds_alone


def rebuild_name(consumer: object, name: str) -> str:
    """Whose rebuild lock the runner of ``consumer`` (called ``name``) takes: its own when
    it is built alone, else the whole's (whose copy it is switched in with)."""
    return name if builds_alone(consumer) else base_name(name)


def all_segments(count: int) -> list[Segment]:
    return [Segment(i, count) for i in range(count)]


def base_name(name: str) -> str:
    """``redis:orders#1/4`` -> ``redis:orders`` (a consumer's own name unchanged)."""
    return segment_parts(name)[0]


def counts_for(text: str, splittable: Iterable[str]) -> dict[str, int]:
    """The segment count of every splittable consumer from ``CQRS_PROJECTOR_SEGMENTS``
    (1 unless it says more); ``ValueError`` for a consumer that cannot be split."""
    wanted = parse_segments(text)
    splittable = list(splittable)
    refused = sorted(set(wanted) - set(splittable) - {ALL})
    if refused:
        raise ValueError(
            f"CQRS_PROJECTOR_SEGMENTS: {', '.join(refused)} cannot be split into segments; "
            f"only the projections can ({', '.join(splittable)})"
        )
    default = wanted.get(ALL, 1)
    return {name: wanted.get(name, default) for name in splittable}
