"""The projections: every entity of :mod:`common.entities` in each backend
(``redis:products``, ``pg:orders`` ...)."""

from __future__ import annotations

from typing import Any

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from common.cursors import SortKey
from common.entities import ENTITIES, Entity

REDIS = "redis"
PG = "pg"
BACKENDS = (REDIS, PG)


def created_us(ts: Timestamp) -> int:
    """Microseconds since the epoch of a protobuf timestamp (the sort key's first part)."""
    return int(ts.seconds) * 1_000_000 + int(ts.nanos) // 1000


def member(doc: Message) -> str:
    """The lexicographic index member of a document (``SortKey.member()``)."""
    fields: Any = doc  # every document has an id and a created_at
    return SortKey(created_us(fields.created_at), fields.id).member()


def projection_name(backend: str, entity: Entity) -> str:
    """``redis:products`` etc."""
    return f"{backend}:{entity.name}"


ALL_PROJECTIONS: tuple[str, ...] = tuple(projection_name(b, e) for b in BACKENDS for e in ENTITIES)
