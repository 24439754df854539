"""The port every query source implements, and the values that cross it.

A source answers gets and keyset-paginated lists with *pre-serialized*
protobuf documents (``Product``/``Customer``/``Order`` wire bytes), so the
servicer can splice them into a response without decoding. ``None`` from a get
means "no such entity, or deleted". Ids, categories and statuses arrive
validated and canonical (lowercase UUIDs, status names such as ``"PENDING"``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from common.cursors import SortKey
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
    """Documents in list order; ``next_key`` is the last one's key when more follow."""

    items: list[bytes]
    next_key: SortKey | None


@dataclass(frozen=True, slots=True)
class OrderFilter:
    """``None`` fields do not filter."""

    customer_id: str | None = None
    status: str | None = None


class QuerySource(Protocol):
    """One place the read server can answer from (Redis, read models, write tables)."""

    async def get_product(self, product_id: str, freshness: Freshness) -> bytes | None:
        """The serialized ``Product``, or ``None`` if it does not exist or was deleted."""
        ...

    async def list_products(
        self, page: PageRequest, category: str | None, freshness: Freshness
    ) -> Page:
        """Products newest first, optionally only those in ``category``."""
        ...

    async def get_customer(self, customer_id: str, freshness: Freshness) -> bytes | None:
        """The serialized ``Customer``, or ``None`` if it does not exist or was deleted."""
        ...

    async def list_customers(self, page: PageRequest, freshness: Freshness) -> Page:
        """Customers newest first."""
        ...

    async def get_order(self, order_id: str, freshness: Freshness) -> bytes | None:
        """The serialized ``Order``, or ``None`` if it does not exist or was deleted."""
        ...

    async def list_orders(
        self, page: PageRequest, order_filter: OrderFilter, freshness: Freshness
    ) -> Page:
        """Orders newest first, optionally of one customer and/or in one status."""
        ...


@dataclass(frozen=True, slots=True)
class SourceSet:
    """The three sources a request can pick with its ``source`` field."""

    projection: QuerySource
    read_model: QuerySource
    write_model: QuerySource
