"""PostgreSQL adapter of the write side: asyncpg, prepared statements, few round trips.

One unit of work = one transaction on one pooled connection: ``BEGIN`` travels with
the advisory locks (one round trip), then the reads, then *every* write of the
command in one statement (:mod:`write_server.adapters.statements`: version-guarded
updates, inserts, the event rows and, last, the NOTIFY), then ``COMMIT``. A
``PlaceOrder`` is four round trips; a ``CreateProduct``, three.

Advisory transaction locks assign no transaction id, so a later change to an
aggregate always carries a larger xid: the order the projector relies on.
"""

from __future__ import annotations

import contextlib
import hashlib
import uuid
from collections.abc import Iterable, Sequence
from typing import Any, Generic, TypeVar

import asyncpg
import orjson

from common.connection_budget import pool_options, write_pool_max
from common.db import keep_session
from common.events import CUSTOMER_FIELDS, NOTIFY_CHANNEL, PRODUCT_FIELDS
from common.positions import Position
from common.settings import Settings
from write_server.adapters import statements as sql
from write_server.domain.aggregate import Aggregate
from write_server.domain.customer import Customer
from write_server.domain.errors import ConcurrencyConflict, EmailTaken
from write_server.domain.order import Order, OrderLine
from write_server.domain.product import Product
from write_server.domain.webhook import WebhookSubscription
from write_server.service_layer import ports

A = TypeVar("A", bound=Aggregate)

POOL_ACQUIRE_TIMEOUT_S = 5.0
CONNECT_TIMEOUT_S = 5.0
# Order numbers are taken from the sequence this many at a time (one round trip per
# block, not per order); a process that stops leaves a gap, as sequences do anyway.
ORDER_NUMBER_BLOCK = 100


def lock_key(key: str) -> int:
    """A signed 64-bit advisory-lock key: a UUID's first 8 bytes, else a hash."""
    try:
        raw = uuid.UUID(key).bytes[:8]
    except ValueError:
        raw = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(raw, "big", signed=True)


async def open_pool(settings: Settings) -> asyncpg.Pool:
    """The write pool. It connects lazily (the server starts while PostgreSQL is down);
    idle-in-transaction sessions are killed: an open transaction would hold back the
    projector's safe horizon (pg_snapshot_xmin)."""
    pool: asyncpg.Pool = await asyncpg.create_pool(
        settings.asyncpg_dsn,
        min_size=0,
        max_size=write_pool_max(settings),
        timeout=CONNECT_TIMEOUT_S,
        **pool_options(settings),
        server_settings=settings.pg_session_settings("cqrs-write-server"),
        reset=keep_session,
    )
    return pool


class OrderNumbers:
    """Hands out order numbers from blocks of the sequence (one per process)."""

    def __init__(self) -> None:
        self._free: list[int] = []

    async def next(self, db: asyncpg.Connection | asyncpg.Pool) -> str:
        """The next number, a block read through ``db`` when none is left."""
        if not self._free:
            rows = await db.fetch(sql.ORDER_NUMBERS, ORDER_NUMBER_BLOCK)
            self._free.extend(reversed([r[0] for r in rows]))
        return f"ORD-{self._free.pop():08d}"


class Session:
    """The unit of work's connection and whether its transaction has begun."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self.begun = False

    async def begin(self) -> None:
        if not self.begun:
            await self.conn.execute("BEGIN")
            self.begun = True

    async def fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        await self.begin()
        rows: list[asyncpg.Record] = await self.conn.fetch(query, *args)
        return rows


class _Repository(ports.Repository[A], Generic[A]):
    _query: str

    def __init__(self, session: Session) -> None:
        super().__init__()
        self._session = session

    async def _load(self, ident: str) -> A | None:
        return (await self._load_many([ident])).get(ident)

    async def _load_many(self, idents: list[str]) -> dict[str, A]:
        rows = await self._session.fetch(self._query, idents)
        return {r["id"]: self._from_row(r) for r in rows}

    def _from_row(self, row: asyncpg.Record) -> A:
        raise NotImplementedError


class PostgresProductRepository(_Repository[Product], ports.ProductRepository):
    _query = sql.LOAD_PRODUCTS

    def _from_row(self, row: asyncpg.Record) -> Product:
        return Product(**_common(row), **{k: row[k] for k in PRODUCT_FIELDS})


class PostgresCustomerRepository(_Repository[Customer], ports.CustomerRepository):
    _query = sql.LOAD_CUSTOMERS

    def _from_row(self, row: asyncpg.Record) -> Customer:
        return Customer(**_common(row), **{k: row[k] for k in CUSTOMER_FIELDS})


class PostgresOrderRepository(_Repository[Order], ports.OrderRepository):
    _query = sql.LOAD_ORDERS

    def __init__(
        self, session: Session, numbers: OrderNumbers, numbers_from: asyncpg.Pool | None = None
    ) -> None:
        super().__init__(session)
        self._numbers = numbers
        # Where a block of numbers is read: the unit of work's transaction, or (a batch of
        # group commit) a transaction of its own: nextval may assign the reading transaction
        # its id, which a batch must not have before all of its locks are held.
        self._numbers_from = numbers_from

    def _from_row(self, row: asyncpg.Record) -> Order:
        return Order(
            **_common(row),
            order_number=row["order_number"],
            customer_id=row["customer_id"],
            currency=row["currency"],
            status=row["status"],
            payment_status=row["payment_status"],
            payment_charge_id=row["payment_charge_id"],
            lines=[OrderLine(*line) for line in row["lines"]],
        )

    async def next_order_number(self) -> str:
        return await self._numbers.next(self._numbers_from or self._session.conn)


class PostgresWebhookRepository(_Repository[WebhookSubscription], ports.WebhookRepository):
    _query = sql.LOAD_WEBHOOKS

    def _from_row(self, row: asyncpg.Record) -> WebhookSubscription:
        return WebhookSubscription(
            **_common(row),
            url=row["url"],
            event_types=orjson.loads(row["event_types"]),
            description=row["description"],
            secret=row["secret"],
            previous_secret=row["previous_secret"],
            rotated_at=row["rotated_at"],
            status=row["status"],
        )


class PostgresRequestLog(ports.RequestLog):
    """``command_requests``, keyed by (subject, request_id) (migration 0008)."""

    def __init__(self, session: Session) -> None:
        self._session = session

    async def get(self, subject: str, request_id: str) -> ports.StoredReply | None:
        rows = await self._session.fetch(sql.GET_REQUEST, subject, request_id)
        if not rows:
            return None
        row = rows[0]
        return ports.StoredReply(row["command"], row["payload_hash"], orjson.loads(row["reply"]))

    async def add(self, subject: str, request_id: str, stored: ports.StoredReply) -> None:
        await self._session.begin()
        await self._session.conn.execute(
            sql.ADD_REQUEST,
            subject,
            request_id,
            stored.command,
            stored.fingerprint,
            orjson.dumps(stored.reply).decode(),
        )


class PostgresUnitOfWork(ports.UnitOfWork):
    """A unit of work on a connection of ``pool`` (``numbers``: the process's order
    numbers)."""

    def __init__(self, pool: asyncpg.Pool, numbers: OrderNumbers) -> None:
        self._pool = pool
        self._numbers = numbers

    async def __aenter__(self) -> PostgresUnitOfWork:
        conn = await self._pool.acquire(timeout=POOL_ACQUIRE_TIMEOUT_S)
        self._open(Session(conn))
        await super().__aenter__()
        return self

    def _open(self, session: Session) -> None:
        """The repositories over ``session``."""
        self._session = session
        self.products = PostgresProductRepository(session)
        self.customers = PostgresCustomerRepository(session)
        self.orders = PostgresOrderRepository(session, self._numbers)
        self.webhooks = PostgresWebhookRepository(session)
        self.requests = PostgresRequestLog(session)

    async def lock(self, keys: Iterable[str]) -> None:
        ordered = sorted({lock_key(k) for k in keys})
        if not ordered:
            return
        session = self._session
        if session.begun:
            await session.conn.execute(sql.LOCK, ordered)
        else:
            await session.conn.execute(sql.begin_and_lock(ordered))
            session.begun = True

    async def _persist(self, changed: list[Aggregate], metadata: dict[str, str]) -> Position:
        writes = _Writes(orjson.dumps(metadata).decode())
        for aggregate in changed:
            writes.add(aggregate)
        shape = writes.shape()
        await self._session.begin()
        try:
            row = await self._session.conn.fetchrow(
                sql.write_statement(shape), *writes.arguments(shape), NOTIFY_CHANNEL
            )
        except asyncpg.UniqueViolationError as exc:
            if exc.constraint_name == "customers_email_unique":
                email = next(a.email for a in changed if isinstance(a, Customer))
                raise EmailTaken(email) from exc
            # events (aggregate_id, aggregate_version): someone wrote that version first
            raise ConcurrencyConflict("an aggregate was changed concurrently") from exc
        assert row is not None
        for table in shape.updates:
            if row[f"updated_{table}"] != len(writes.updates[table]):
                raise ConcurrencyConflict(f"a {table[:-1]} was changed concurrently")
        return Position(row["xid"], row["seq"])

    async def _commit(self) -> None:
        if self._session.begun:
            await self._session.conn.execute("COMMIT")

    async def rollback(self) -> None:
        conn = self._session.conn
        try:
            if not self._session.begun or conn.is_closed():
                return
        except asyncpg.InterfaceError:
            # asyncpg already took a connection lost mid-statement back (PostgreSQL shut
            # down): nothing to roll back; the original error says what happened.
            return
        await conn.execute("ROLLBACK")

    async def __aexit__(self, *exc_info: object) -> None:
        conn = self._session.conn
        try:
            if not self._committed:
                await self.rollback()
        except BaseException:
            # The connection's state is unknown (broken, or cancelled mid-statement):
            # never hand it to the next unit of work.
            with contextlib.suppress(asyncpg.InterfaceError):  # already released
                conn.terminate()
            raise
        finally:
            with contextlib.suppress(asyncpg.InterfaceError):  # already released
                await self._pool.release(conn)


class _Writes:
    """The rows of one command, as the write statement's column arrays."""

    def __init__(self, metadata: str) -> None:
        self.inserts: dict[str, list[tuple[Any, ...]]] = {t: [] for t in sql.INSERTS}
        self.updates: dict[str, list[tuple[Any, ...]]] = {t: [] for t in sql.UPDATES}
        self.events: list[tuple[Any, ...]] = []
        self._metadata = metadata

    def add(self, aggregate: Aggregate) -> None:
        table, state = _STATE[type(aggregate)]
        values = [_column(getattr(aggregate, name), kind) for name, kind in state[:-3]]
        tail = (
            aggregate.version,
            aggregate.updated_at,
            aggregate.updated_at if aggregate.deleted else None,
        )
        if aggregate.loaded_version == 0:
            self.inserts[table].append(_new_row(aggregate, values, tail))
            if isinstance(aggregate, Order):
                self.inserts["order_items"] += [
                    (aggregate.id, n, *line.as_dict().values())
                    for n, line in enumerate(aggregate.lines, start=1)
                ]
        else:
            self.updates[table].append((aggregate.id, aggregate.loaded_version, *values, *tail))
        self.events += [
            (
                e.aggregate_type,
                e.aggregate_id,
                e.version,
                e.event_type,
                e.schema_version,
                orjson.dumps(e.payload()).decode(),
                self._metadata,
                e.occurred_at,
            )
            for e in aggregate.take_events()
        ]

    def shape(self) -> sql.Shape:
        return sql.Shape(
            tuple(t for t, rows in self.inserts.items() if rows),
            tuple(t for t, rows in self.updates.items() if rows),
        )

    def arguments(self, shape: sql.Shape) -> list[list[Any]]:
        """One list per column of every CTE in ``shape``, then the events'."""
        tables = [self.inserts[t] for t in shape.inserts] + [self.updates[t] for t in shape.updates]
        widths = [len(sql.INSERTS[t].columns) for t in shape.inserts]
        widths += [len(sql.UPDATES[t].columns) for t in shape.updates]
        arguments: list[list[Any]] = []
        for rows, width in [
            *zip(tables, widths, strict=True),
            (self.events, len(sql.EVENTS.columns)),
        ]:
            arguments += (
                [list(column) for column in zip(*rows, strict=True)]
                if rows
                else [[] for _ in range(width)]
            )
        return arguments


_STATE: dict[type[Aggregate], tuple[str, tuple[tuple[str, str], ...]]] = {
    Product: ("products", sql.PRODUCT_STATE),
    Customer: ("customers", sql.CUSTOMER_STATE),
    Order: ("orders", sql.ORDER_STATE),
    WebhookSubscription: ("webhook_subscriptions", sql.WEBHOOK_STATE),
}


def _column(value: Any, kind: str) -> Any:
    """A state value as its column takes it (jsonb columns take JSON text)."""
    return orjson.dumps(value).decode() if kind == "jsonb" else value


def _new_row(aggregate: Aggregate, values: Sequence[Any], tail: tuple[Any, ...]) -> tuple[Any, ...]:
    if isinstance(aggregate, Order):
        o = aggregate
        return (o.id, o.created_at, o.order_number, o.customer_id, o.total_cents, o.currency,
                *values, *tail)  # fmt: skip
    return (aggregate.id, aggregate.created_at, *values, *tail)


def _common(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "id": row["id"],
        "version": row["version"],
        "loaded_version": row["version"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
        "deleted": row["deleted_at"] is not None,
    }
