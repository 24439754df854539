"""Ports of the write side: repositories, the idempotency log and the unit of work.

Two adapters implement them with the same contract (same NotFound, conflict and
uniqueness errors): ``adapters.memory`` (unit tests) and ``adapters.postgres_uow``
(PostgreSQL over asyncpg). ``tests/contract`` runs one suite against both.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Generic, TypeVar

from common.positions import Position
from write_server.domain.aggregate import Aggregate
from write_server.domain.customer import Customer
from write_server.domain.errors import entity_not_found
from write_server.domain.order import Order
from write_server.domain.product import Product
from write_server.domain.webhook import WebhookSubscription

A = TypeVar("A", bound=Aggregate)


class Repository(abc.ABC, Generic[A]):
    """Loads aggregates and remembers every one it handed out or was given,
    so the unit of work can save them and their events together."""

    kind: str

    def __init__(self) -> None:
        self.seen: dict[str, A] = {}

    async def get(self, ident: str) -> A:
        """The live aggregate; NotFound if it does not exist or was deleted."""
        if ident in self.seen:
            found: A | None = self.seen[ident]
        else:
            found = await self._load(ident)
        if found is None or found.deleted:
            raise entity_not_found(self.kind, ident)
        self.seen[ident] = found
        return found

    async def get_many(self, idents: Iterable[str]) -> dict[str, A]:
        """The live aggregates among ``idents`` (missing or deleted ones are left out)."""
        wanted = [i for i in idents if i not in self.seen]
        loaded = await self._load_many(wanted) if wanted else {}
        for ident, aggregate in loaded.items():
            self.seen[ident] = aggregate
        return {i: self.seen[i] for i in idents if i in self.seen and not self.seen[i].deleted}

    def add(self, aggregate: A) -> None:
        self.seen[aggregate.id] = aggregate

    @abc.abstractmethod
    async def _load(self, ident: str) -> A | None: ...

    @abc.abstractmethod
    async def _load_many(self, idents: list[str]) -> dict[str, A]: ...


class ProductRepository(Repository[Product]):
    kind = "product"


class CustomerRepository(Repository[Customer]):
    kind = "customer"


class OrderRepository(Repository[Order]):
    kind = "order"

    @abc.abstractmethod
    async def next_order_number(self) -> str:
        """A new unique, human-readable order number (e.g. ``ORD-00000042``)."""


class WebhookRepository(Repository[WebhookSubscription]):
    kind = "webhook subscription"


@dataclass(frozen=True, slots=True)
class StoredReply:
    command: str
    fingerprint: str
    reply: dict[str, Any]


class RequestLog(abc.ABC):
    """Replies of commands that carried a request_id (idempotency keys).

    A key is (subject, request_id): the caller's authenticated subject scopes it, so one
    caller's request_id (visible to readers in the events' metadata) is no replay for
    another. Stored replies never hold a webhook secret (see ``CommandService``).
    """

    @abc.abstractmethod
    async def get(self, subject: str, request_id: str) -> StoredReply | None:
        """The reply stored for ``subject``'s ``request_id``, or None."""

    @abc.abstractmethod
    async def add(self, subject: str, request_id: str, stored: StoredReply) -> None:
        """Store the reply of ``subject``'s ``request_id`` with the unit of work's changes."""


class Deferred(Exception):
    """The unit of work gave way before changing anything (a group-committing adapter: its
    batch already changes the same aggregate, or a lock it must not wait for is taken):
    the command must run again, in a new unit of work with ``retried`` set."""


class UnitOfWork(abc.ABC):
    """One atomic change: rolls back on exit unless ``commit`` was called.

    Commands must call ``lock`` for every aggregate they will change *before*
    their first write. The PostgreSQL adapter takes advisory transaction locks,
    which do not assign a transaction id, so a later change to an aggregate
    always carries a larger xid — the property the projector's (xid, seq) order
    relies on (see docs/ARCHITECTURE.md).
    """

    products: ProductRepository
    customers: CustomerRepository
    orders: OrderRepository
    webhooks: WebhookRepository
    requests: RequestLog
    # Set by the service when it runs a command again after ``Deferred``: an adapter must
    # then not defer it again for the same reason (it leads its batch).
    retried: bool = False

    async def __aenter__(self) -> UnitOfWork:
        self._committed = False
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self._committed:
            await self.rollback()
        await self._close()

    @abc.abstractmethod
    async def lock(self, keys: Iterable[str]) -> None:
        """Hold exclusive locks on ``keys`` until the end of the unit of work."""

    async def flush(self, metadata: dict[str, str]) -> Position | None:
        """Save every changed aggregate and append its events; the last event's position."""
        changed: list[Aggregate] = [
            a
            for repo in (self.products, self.customers, self.orders, self.webhooks)
            for a in repo.seen.values()
            if a.pending
        ]
        return await self._persist(changed, metadata) if changed else None

    async def commit(self) -> None:
        await self._commit()
        self._committed = True

    @abc.abstractmethod
    async def _persist(self, changed: list[Aggregate], metadata: dict[str, str]) -> Position:
        """Save state (version-guarded) and events of ``changed``, in the order given."""

    @abc.abstractmethod
    async def _commit(self) -> None: ...

    @abc.abstractmethod
    async def rollback(self) -> None: ...

    async def _close(self) -> None:
        return None
