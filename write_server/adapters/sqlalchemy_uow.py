"""PostgreSQL adapter (SQLAlchemy 2 Core, async, asyncpg).

One unit of work = one transaction: advisory locks first, then reads, then the
version-guarded writes, the event rows, the idempotency record and, last, a
NOTIFY (it takes a global lock at commit, so it must come at the very end).
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Generic, TypeVar

from sqlalchemy import and_, insert, literal_column, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from common.events import CUSTOMER_FIELDS, NOTIFY_CHANNEL, PRODUCT_FIELDS
from common.positions import Position
from write_server.adapters import tables
from write_server.domain.aggregate import Aggregate
from write_server.domain.customer import Customer
from write_server.domain.errors import ConcurrencyConflict, EmailTaken
from write_server.domain.order import Order, OrderLine
from write_server.domain.product import Product
from write_server.service_layer import ports

A = TypeVar("A", bound=Aggregate)

_LOCK = text(
    # Keys arrive sorted; unnest yields them in array order, so every
    # transaction takes its locks in the same global order (no deadlocks).
    "SELECT count(pg_advisory_xact_lock(k)) FROM unnest(CAST(:keys AS bigint[])) AS k"
)
_NOTIFY = text("SELECT pg_notify(:channel, '')")


def lock_key(key: str) -> int:
    """A signed 64-bit advisory-lock key: a UUID's first 8 bytes, else a hash."""
    try:
        raw = uuid.UUID(key).bytes[:8]
    except ValueError:
        raw = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(raw, "big", signed=True)


class _SqlRepository(ports.Repository[A], Generic[A]):
    def __init__(self, conn: AsyncConnection) -> None:
        super().__init__()
        self._conn = conn

    async def _load(self, ident: str) -> A | None:
        return (await self._load_many([ident])).get(ident)


class SqlProductRepository(_SqlRepository[Product], ports.ProductRepository):
    async def _load_many(self, idents: list[str]) -> dict[str, Product]:
        rows = await self._conn.execute(
            select(tables.products).where(tables.products.c.id.in_(idents))
        )
        return {str(r.id): _product(r._mapping) for r in rows}


class SqlCustomerRepository(_SqlRepository[Customer], ports.CustomerRepository):
    async def _load_many(self, idents: list[str]) -> dict[str, Customer]:
        rows = await self._conn.execute(
            select(tables.customers).where(tables.customers.c.id.in_(idents))
        )
        return {str(r.id): _customer(r._mapping) for r in rows}


class SqlOrderRepository(_SqlRepository[Order], ports.OrderRepository):
    async def _load_many(self, idents: list[str]) -> dict[str, Order]:
        rows = (
            await self._conn.execute(select(tables.orders).where(tables.orders.c.id.in_(idents)))
        ).all()
        if not rows:
            return {}
        items = await self._conn.execute(
            select(tables.order_items)
            .where(tables.order_items.c.order_id.in_(idents))
            .order_by(tables.order_items.c.order_id, tables.order_items.c.line_no)
        )
        lines: dict[str, list[OrderLine]] = {}
        for i in items:
            lines.setdefault(str(i.order_id), []).append(
                OrderLine(str(i.product_id), i.name, i.quantity, i.unit_price_cents)
            )
        return {str(r.id): _order(r._mapping, lines.get(str(r.id), [])) for r in rows}

    async def next_order_number(self) -> str:
        number = await self._conn.scalar(text("SELECT nextval('order_number_seq')"))
        return f"ORD-{number:08d}"


class SqlRequestLog(ports.RequestLog):
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def get(self, request_id: str) -> ports.StoredReply | None:
        row = (
            await self._conn.execute(
                select(tables.command_requests).where(
                    tables.command_requests.c.request_id == request_id
                )
            )
        ).first()
        if row is None:
            return None
        return ports.StoredReply(row.command, row.payload_hash, dict(row.reply))

    async def add(self, request_id: str, stored: ports.StoredReply) -> None:
        await self._conn.execute(
            insert(tables.command_requests).values(
                request_id=request_id,
                command=stored.command,
                payload_hash=stored.fingerprint,
                reply=stored.reply,
            )
        )


class SqlAlchemyUnitOfWork(ports.UnitOfWork):
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def __aenter__(self) -> SqlAlchemyUnitOfWork:
        self._conn = await self._engine.connect()
        try:
            await self._conn.begin()
        except BaseException:
            await self._conn.close()
            raise
        self.products = SqlProductRepository(self._conn)
        self.customers = SqlCustomerRepository(self._conn)
        self.orders = SqlOrderRepository(self._conn)
        self.requests = SqlRequestLog(self._conn)
        await super().__aenter__()
        return self

    async def lock(self, keys: Iterable[str]) -> None:
        ordered = sorted({lock_key(k) for k in keys})
        if ordered:
            await self._conn.execute(_LOCK, {"keys": ordered})

    async def _persist(self, changed: list[Aggregate], metadata: dict[str, str]) -> Position:
        rows: list[dict[str, Any]] = []
        for aggregate in changed:
            await self._save(aggregate)
            rows.extend(
                {
                    "aggregate_type": e.aggregate_type,
                    "aggregate_id": e.aggregate_id,
                    "aggregate_version": e.version,
                    "event_type": e.event_type,
                    "payload": e.payload(),
                    "metadata": metadata,
                    "occurred_at": e.occurred_at,
                }
                for e in aggregate.take_events()
            )
        try:
            result = await self._conn.execute(
                insert(tables.events).returning(
                    tables.events.c.seq, literal_column("xid::text::bigint")
                ),
                rows,
            )
        except IntegrityError as exc:  # unique (aggregate_id, aggregate_version)
            raise ConcurrencyConflict("an aggregate was changed concurrently") from exc
        positions = [Position(int(r[1]), int(r[0])) for r in result]
        return max(positions)

    async def _save(self, aggregate: Aggregate) -> None:
        if isinstance(aggregate, Product):
            await self._upsert(tables.products, aggregate, _values(aggregate, PRODUCT_FIELDS))
        elif isinstance(aggregate, Customer):
            try:
                await self._upsert(tables.customers, aggregate, _values(aggregate, CUSTOMER_FIELDS))
            except IntegrityError as exc:
                if "customers_email_unique" in str(exc.orig):
                    raise EmailTaken(aggregate.email) from exc
                raise
        elif isinstance(aggregate, Order):
            await self._upsert(tables.orders, aggregate, _order_values(aggregate))
            if aggregate.loaded_version == 0:
                await self._conn.execute(
                    insert(tables.order_items),
                    [
                        {"order_id": aggregate.id, "line_no": n, **line.as_dict()}
                        for n, line in enumerate(aggregate.lines, start=1)
                    ],
                )
        else:  # pragma: no cover - every aggregate type is listed above
            raise TypeError(type(aggregate))

    async def _upsert(self, table: Any, aggregate: Aggregate, values: dict[str, Any]) -> None:
        values = {
            **values,
            "version": aggregate.version,
            "updated_at": aggregate.updated_at,
            "deleted_at": aggregate.updated_at if aggregate.deleted else None,
        }
        if aggregate.loaded_version == 0:
            await self._conn.execute(
                insert(table).values(id=aggregate.id, created_at=aggregate.created_at, **values)
            )
            return
        result = await self._conn.execute(
            update(table)
            .where(and_(table.c.id == aggregate.id, table.c.version == aggregate.loaded_version))
            .values(**values)
        )
        if result.rowcount != 1:
            raise ConcurrencyConflict(
                f"{aggregate.kind.lower()} {aggregate.id} changed concurrently"
            )

    async def _commit(self) -> None:
        await self._conn.execute(_NOTIFY, {"channel": NOTIFY_CHANNEL})
        await self._conn.commit()

    async def rollback(self) -> None:
        await self._conn.rollback()

    async def _close(self) -> None:
        await self._conn.close()


def _values(aggregate: Aggregate, fields: Sequence[str]) -> dict[str, Any]:
    return {f: getattr(aggregate, f) for f in fields}


def _order_values(o: Order) -> dict[str, Any]:
    values: dict[str, Any] = {"status": o.status}
    if o.loaded_version == 0:
        values.update(
            order_number=o.order_number,
            customer_id=o.customer_id,
            total_cents=o.total_cents,
            currency=o.currency,
        )
    return values


def _common(row: Mapping[Any, Any]) -> dict[str, Any]:
    return {
        "id": str(row["id"]),
        "version": row["version"],
        "loaded_version": row["version"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
        "deleted": row["deleted_at"] is not None,
    }


def _product(row: Mapping[Any, Any]) -> Product:
    return Product(**_common(row), **{k: row[k] for k in PRODUCT_FIELDS})


def _customer(row: Mapping[Any, Any]) -> Customer:
    return Customer(**_common(row), **{k: row[k] for k in CUSTOMER_FIELDS})


def _order(row: Mapping[Any, Any], lines: Sequence[OrderLine]) -> Order:
    return Order(
        **_common(row),
        order_number=row["order_number"],
        customer_id=str(row["customer_id"]),
        currency=row["currency"],
        status=row["status"],
        lines=list(lines),
    )
