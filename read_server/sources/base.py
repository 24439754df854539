"""The port every query source implements, and the values that cross it.

A source answers gets and keyset-paginated lists of any entity of
:mod:`common.entities` with *pre-serialized* protobuf documents (wire bytes), so the
servicer can splice them into a response without decoding. ``None`` from a get means
"no such entity, or deleted". Ids and filter values arrive validated and canonical
(lowercase UUIDs, enum labels such as ``"PENDING"``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from common.cursors import SortKey
from common.entities import Entity
from common.positions import Position


@dataclass(frozen=True, slots=True)
class Freshness:
    """How fresh an answer must be.

    ``position`` (from a consistency token) must have been applied by the
    source's projection before it answers; it waits at most ``max_wait_s`` and
    then raises ``common.errors.Unavailable``. ``None`` means "as it is now".
    """

    position: Position | None = None
    max_wait_s: float = 0.0


ANY_FRESHNESS = Freshness()


@dataclass(frozen=True, slots=True)
class PageRequest:
    """``size`` items strictly after ``after`` (newest first; ``None`` = from the top)."""

    size: int
    after: SortKey | None = None


@dataclass(frozen=True, slots=True)
class Page:
    """Documents in list order; ``next_key`` is the last one's key when more follow.
    ``members``: each document's Redis index member (``SortKey.member()``, which orders as
    the list does) where the source has them at hand (to merge the pages of a projection's
    shards), else empty."""

    items: list[bytes]
    next_key: SortKey | None
    members: tuple[bytes, ...] = ()


# A list's filter: entity filter field -> value (``{"status": "PENDING"}``); empty: all.
Where = Mapping[str, str]


class QuerySource(Protocol):
    """One place the read server can answer from (Redis, read models, write tables)."""

    async def get(self, entity: Entity, ident: str, freshness: Freshness) -> bytes | None:
        """The serialized document, or ``None`` if it does not exist or was deleted."""
        ...

    async def list(
        self, entity: Entity, page: PageRequest, where: Where, freshness: Freshness
    ) -> Page:
        """Documents newest first, only those matching ``where`` (a combination of the
        entity's filters it has an index for)."""
        ...


@dataclass(frozen=True, slots=True)
class SourceSet:
    """The three sources a request can pick with its ``source`` field."""

    projection: QuerySource
    read_model: QuerySource
    write_model: QuerySource
