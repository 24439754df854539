"""The Redis key layout of the projections (docs/ARCHITECTURE.md, "Redis layout").

``P:{proj}:active`` names the generation readers and the live runner use; each
generation ``G`` keeps its own documents, indexes and checkpoint under
``P:{proj}:gG:``, so a rebuild can fill a new one and switch with one SET. The braces are
a Redis Cluster hash tag: a projection's keys share one slot.
"""

from __future__ import annotations

from dataclasses import dataclass

_GLOB_SPECIAL = "\\*?[]"


def glob_escape(text: str) -> str:
    """``text`` as a literal inside a SCAN MATCH pattern."""
    return "".join("\\" + c if c in _GLOB_SPECIAL else c for c in text)


@dataclass(frozen=True, slots=True)
class ProjectionKeys:
    """Key names of one Redis projection (``prefix`` = CQRS_REDIS_PREFIX)."""

    prefix: str
    projection: str  # products | customers | orders

    @property
    def base(self) -> str:
        """``P:{proj}``: the braces are a Redis Cluster hash tag, so every key of a
        projection is in one slot, and a script may touch them all (on one Redis they are
        only part of the name)."""
        return f"{self.prefix}:{{{self.projection}}}"

    @property
    def active(self) -> str:
        return f"{self.base}:active"

    @property
    def next_gen(self) -> str:
        return f"{self.base}:next_gen"

    @property
    def changes(self) -> str:
        """The pub/sub channel where every committed batch says what it changed."""
        return f"{self.base}:changes"

    def generation(self, gen: int) -> str:
        """The common prefix of every key of generation ``gen`` (ends with ``:``)."""
        return f"{self.base}:g{gen}:"

    def checkpoint(self, gen: int) -> str:
        """The projection's checkpoint (a split one's: the lowest of its segments')."""
        return f"{self.generation(gen)}checkpoint"

    def segment_checkpoint(self, gen: int, label: str) -> str:
        """Segment ``label``'s (``1/4``, :mod:`projector.segments`)."""
        return f"{self.checkpoint(gen)}:{label}"

    def segments(self, gen: int) -> str:
        """How many segments generation ``gen`` was split into (absent: not split)."""
        return f"{self.generation(gen)}segments"

    def doc(self, gen: int, doc_id: str) -> str:
        return f"{self.generation(gen)}doc:{doc_id}"

    def index(self, gen: int, suffix: str) -> str:
        """``suffix`` e.g. ``all``, ``category:books``, ``customer_status:{id}:PENDING``
        (an entity's ``index_keys`` / ``index_for``, :mod:`common.entities`)."""
        return f"{self.generation(gen)}idx:{suffix}"

    def generation_pattern(self, gen: int | None = None) -> str:
        """SCAN MATCH pattern for one generation's keys, or every generation's."""
        base = glob_escape(self.base)
        return f"{base}:g{gen}:*" if gen is not None else f"{base}:g*"
