"""In-memory adapter: the same contract as the PostgreSQL one, for fast unit tests.

State lives in an :class:`InMemoryStore` shared by units of work; a unit of work
stages its changes and applies them in ``commit`` (atomically: no await inside),
re-checking versions and email uniqueness exactly like the database does.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from common.positions import Position
from write_server.domain.aggregate import Aggregate
from write_server.domain.customer import Customer
from write_server.domain.errors import ConcurrencyConflict, EmailTaken
from write_server.domain.events import DomainEvent
from write_server.domain.order import Order
from write_server.domain.product import Product
from write_server.domain.webhook import WebhookSubscription
from write_server.service_layer import ports

A = TypeVar("A", bound=Aggregate)


@dataclass(frozen=True, slots=True)
class RecordedEvent:
    position: Position
    event: DomainEvent
    metadata: dict[str, str]


@dataclass
class InMemoryStore:
    """Committed state shared by every InMemoryUnitOfWork built on it."""

    products: dict[str, Product] = field(default_factory=dict)
    customers: dict[str, Customer] = field(default_factory=dict)
    orders: dict[str, Order] = field(default_factory=dict)
    webhooks: dict[str, WebhookSubscription] = field(default_factory=dict)
    # (subject, request_id) -> the stored reply
    requests: dict[tuple[str, str], ports.StoredReply] = field(default_factory=dict)
    events: list[RecordedEvent] = field(default_factory=list)
    last_xid: int = 0
    last_seq: int = 0
    last_order_number: int = 0
    locks: dict[str, asyncio.Lock] = field(default_factory=dict)


class _MemoryRepository(ports.Repository[A], Generic[A]):
    def __init__(self, table: dict[str, A]) -> None:
        super().__init__()
        self._table = table

    async def _load(self, ident: str) -> A | None:
        stored = self._table.get(ident)
        return _fresh_copy(stored) if stored is not None else None

    async def _load_many(self, idents: list[str]) -> dict[str, A]:
        return {i: _fresh_copy(self._table[i]) for i in idents if i in self._table}


def _fresh_copy(stored: A) -> A:
    loaded = copy.deepcopy(stored)
    loaded.loaded_version = loaded.version
    loaded.pending = []
    return loaded


class MemoryProductRepository(_MemoryRepository[Product], ports.ProductRepository):
    pass


class MemoryCustomerRepository(_MemoryRepository[Customer], ports.CustomerRepository):
    pass


class MemoryOrderRepository(_MemoryRepository[Order], ports.OrderRepository):
    def __init__(self, store: InMemoryStore) -> None:
        super().__init__(store.orders)
        self._store = store

    async def next_order_number(self) -> str:
        # Like a database sequence: never reused, even after a rollback.
        self._store.last_order_number += 1
        return f"ORD-{self._store.last_order_number:08d}"


class MemoryWebhookRepository(_MemoryRepository[WebhookSubscription], ports.WebhookRepository):
    pass


class MemoryRequestLog(ports.RequestLog):
    """Keyed by (subject, request_id), like the table's primary key."""

    def __init__(self, store: InMemoryStore) -> None:
        self._store = store
        self.staged: dict[tuple[str, str], ports.StoredReply] = {}

    async def get(self, subject: str, request_id: str) -> ports.StoredReply | None:
        return self._store.requests.get((subject, request_id))

    async def add(self, subject: str, request_id: str, stored: ports.StoredReply) -> None:
        self.staged[(subject, request_id)] = stored


class InMemoryUnitOfWork(ports.UnitOfWork):
    def __init__(self, store: InMemoryStore) -> None:
        self._store = store
        self.products = MemoryProductRepository(store.products)
        self.customers = MemoryCustomerRepository(store.customers)
        self.orders = MemoryOrderRepository(store)
        self.webhooks = MemoryWebhookRepository(store.webhooks)
        self.requests = self._requests = MemoryRequestLog(store)
        self._held: list[asyncio.Lock] = []
        self._held_keys: set[str] = set()
        self._staged: list[tuple[Aggregate, list[RecordedEvent]]] = []

    async def lock(self, keys: Iterable[str]) -> None:
        for key in sorted(set(keys) - self._held_keys):
            lock = self._store.locks.setdefault(key, asyncio.Lock())
            await lock.acquire()
            self._held.append(lock)
            self._held_keys.add(key)

    async def _persist(self, changed: list[Aggregate], metadata: dict[str, str]) -> Position:
        self._store.last_xid += 1
        xid = self._store.last_xid
        position = Position(xid, 0)
        for aggregate in changed:
            recorded = []
            for event in aggregate.take_events():
                self._store.last_seq += 1
                position = Position(xid, self._store.last_seq)
                recorded.append(RecordedEvent(position, event, metadata))
            self._staged.append((aggregate, recorded))
        return position

    async def _commit(self) -> None:
        tables: dict[type[Aggregate], dict[str, Aggregate]] = {
            Product: self._store.products,  # type: ignore[dict-item]
            Customer: self._store.customers,  # type: ignore[dict-item]
            Order: self._store.orders,  # type: ignore[dict-item]
            WebhookSubscription: self._store.webhooks,  # type: ignore[dict-item]
        }
        # Check everything first, then apply: all or nothing.
        for aggregate, _ in self._staged:
            stored = tables[type(aggregate)].get(aggregate.id)
            if (stored.version if stored else 0) != aggregate.loaded_version:
                raise ConcurrencyConflict(
                    f"{aggregate.kind.lower()} {aggregate.id} changed concurrently"
                )
            if isinstance(aggregate, Customer) and not aggregate.deleted:
                self._check_email(aggregate)
        for aggregate, recorded in self._staged:
            saved = copy.deepcopy(aggregate)
            saved.loaded_version = saved.version
            tables[type(aggregate)][aggregate.id] = saved
            self._store.events.extend(recorded)
        self._store.requests.update(self._requests.staged)
        self._release()

    def _check_email(self, customer: Customer) -> None:
        for other in self._store.customers.values():
            if other.id != customer.id and not other.deleted and other.email == customer.email:
                raise EmailTaken(customer.email)

    async def rollback(self) -> None:
        self._staged.clear()
        self._requests.staged.clear()
        self._release()

    def _release(self) -> None:
        for lock in reversed(self._held):
            lock.release()
        self._held.clear()
        self._held_keys.clear()
