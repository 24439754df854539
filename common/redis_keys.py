"""The Redis key layout of the projections (docs/ARCHITECTURE.md, "Redis layout").

``P:L2:{proj}:active`` names the generation readers and the live runner use; each
generation ``G`` keeps its own documents (one hash), indexes and checkpoint under
``P:L2:{proj}:gG:``, so a rebuild can fill a new one and switch with one SET. The braces
are a Redis Cluster hash tag: a projection's keys share one slot. ``L2`` is the layout
(:data:`LAYOUT`): a release that lays keys out differently names another, so its
processes build the new layout from the log instead of misreading the old one.

A projection *spread* over S keyspaces (``CQRS_REDIS_SPREAD``) has one per segment
(:mod:`common.segmenting`), each with a tag of its own (:func:`shard_tag`) and all of the
above (its own ``active``, generations and checkpoint): the documents of the aggregates
segment ``i`` owns, and their index entries, live under shard ``i``'s tag.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

_GLOB_SPECIAL = "\\*?[]"
# Layout 2: a generation's documents are one hash (a list reads a page's members and their
# documents in one script). Layout 1 kept a key per document.
LAYOUT = "L2"


def glob_escape(text: str) -> str:
    """``text`` as a literal inside a SCAN MATCH pattern."""
    return "".join("\\" + c if c in _GLOB_SPECIAL else c for c in text)


@cache
def shard_tag(projection: str, index: int, count: int) -> str:
    """The hash tag of shard ``index`` of ``count``: ``orders#1/3``, with a suffix
    (``orders#1/3.7``) chosen so that its slot is in the ``index``-th of ``count`` equal
    ranges of the 16,384 slots. ``redis-cli --cluster create`` gives each master one such
    range, so S shards on S masters land one on each (a reshard may move them together:
    still correct, only less spread). The same in every process: the first suffix that
    fits."""
    base = f"{projection}#{index}/{count}"
    low = index * REDIS_CLUSTER_HASH_SLOTS // count
    high = (index + 1) * REDIS_CLUSTER_HASH_SLOTS // count
    tag, salt = base, 0
    while not low <= key_slot(tag.encode()) < high:
        salt += 1
        tag = f"{base}.{salt}"
    return tag


@dataclass(frozen=True, slots=True)
class ProjectionKeys:
    """Key names of one Redis projection (``prefix`` = CQRS_REDIS_PREFIX), or of one shard
    of a spread one (``shard`` = (index, count))."""

    prefix: str
    projection: str  # products | customers | orders
    shard: tuple[int, int] | None = None
    # Every key starts with it: made once (a list names a key per document on its page).
    _base: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_base", f"{self.prefix}:{LAYOUT}:{{{self.tag}}}")

    @property
    def tag(self) -> str:
        """The hash tag: the projection's name, or its shard's (:func:`shard_tag`)."""
        if self.shard is None:
            return self.projection
        return shard_tag(self.projection, *self.shard)

    @property
    def base(self) -> str:
        """``P:L2:{proj}``: the braces are a Redis Cluster hash tag, so every key of a
        projection (of a shard) is in one slot, and a script may touch them all (on one
        Redis they are only part of the name)."""
        return self._base

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

    def docs(self, gen: int) -> str:
        """Generation ``gen``'s documents: one hash, id -> serialized protobuf (one key, so
        a script given it can read any page's documents)."""
        return f"{self.generation(gen)}docs"

    def index(self, gen: int, suffix: str) -> str:
        """``suffix`` e.g. ``all``, ``category:books``, ``customer_status:{id}:PENDING``
        (an entity's ``index_keys`` / ``index_for``, :mod:`common.entities`)."""
        return f"{self.generation(gen)}idx:{suffix}"

    def generation_pattern(self, gen: int | None = None) -> str:
        """SCAN MATCH pattern for one generation's keys, or every generation's."""
        base = glob_escape(self.base)
        return f"{base}:g{gen}:*" if gen is not None else f"{base}:g*"


def keyspaces(prefix: str, projection: str, shards: int) -> list[ProjectionKeys]:
    """The keyspaces of a projection: its own, or one per shard when spread (``shards``
    > 1), shard ``i`` holding the documents of segment ``i``."""
    if shards == 1:
        return [ProjectionKeys(prefix, projection)]
    return [ProjectionKeys(prefix, projection, (i, shards)) for i in range(shards)]
