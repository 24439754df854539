"""Read-server test support: one dataset stored everywhere, and fakes for unit tests.

One small shop dataset written, identically, into every place the read server reads.

``build_dataset`` makes products, customers and orders with same-timestamp ties,
a deleted entity of each kind and an order of a deleted customer.
``load_write_model`` / ``load_read_model`` / ``load_redis`` store it the way the
write side and the two projections would (without running them), so the three
query sources can be compared item for item.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import asyncpg
import redis.asyncio as aioredis

from common import entities
from common.cursors import SortKey, sort_key
from common.documents import status_name, status_value, timestamp
from common.entities import Entity
from common.pb.shop.v1 import shop_pb2
from common.positions import Position
from common.redis_client import redis_client
from common.redis_keys import ProjectionKeys
from common.settings import Settings
from read_server.bootstrap import App, bootstrap
from read_server.sources.base import Freshness, Page, PageRequest, QuerySource, Where

Doc = TypeVar("Doc", shop_pb2.Product, shop_pb2.Customer, shop_pb2.Order)

T0 = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
CHECKPOINT = Position(1000, 50)
GENERATION = 3  # not 1: proves readers resolve `active` instead of assuming it
CATEGORIES = ("books", "games", "home:garden")  # ':' must not confuse key building


@dataclass
class ReadDataset:
    """Live documents plus the deleted ones (present in the write tables only)."""

    products: list[shop_pb2.Product] = field(default_factory=list)
    customers: list[shop_pb2.Customer] = field(default_factory=list)
    orders: list[shop_pb2.Order] = field(default_factory=list)
    deleted_products: list[shop_pb2.Product] = field(default_factory=list)
    deleted_customers: list[shop_pb2.Customer] = field(default_factory=list)
    deleted_orders: list[shop_pb2.Order] = field(default_factory=list)

    def live_customer_ids(self) -> set[str]:
        return {c.id for c in self.customers}


def created_at(doc: shop_pb2.Product | shop_pb2.Customer | shop_pb2.Order) -> datetime:
    return doc.created_at.ToDatetime(tzinfo=UTC)


def key_of(doc: shop_pb2.Product | shop_pb2.Customer | shop_pb2.Order) -> SortKey:
    return sort_key(created_at(doc), doc.id)


def newest_first(docs: Iterable[Doc], keep: Callable[[Doc], bool] = lambda _: True) -> list[Doc]:
    """The order every source must list in: (created_at, id) descending."""
    return sorted((d for d in docs if keep(d)), key=key_of, reverse=True)


def _at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def _product(n: int, category: str, created: datetime) -> shop_pb2.Product:
    return shop_pb2.Product(
        id=str(uuid.uuid4()),
        name=f"Product {n}",
        description=f"Description of product {n} " * (n % 3),
        price_cents=1000 + n * 111,
        currency="EUR",
        category=category,
        stock=n * 3,
        version=1 + n % 4,
        created_at=timestamp(created),
        updated_at=timestamp(created + timedelta(minutes=n)),
    )


def _customer(n: int, created: datetime) -> shop_pb2.Customer:
    return shop_pb2.Customer(
        id=str(uuid.uuid4()),
        name=f"Customer {n}",
        email=f"customer{n}@example.com",
        address=f"{n} Main Street",
        city="Springfield",
        postal_code=f"{10000 + n}",
        country="DE",
        version=1 + n % 3,
        created_at=timestamp(created),
        updated_at=timestamp(created + timedelta(hours=n)),
    )


def _order(
    n: int,
    customer: shop_pb2.Customer,
    products: Sequence[shop_pb2.Product],
    status: str,
    created: datetime,
) -> shop_pb2.Order:
    items = [
        shop_pb2.OrderItem(
            product_id=p.id,
            name=p.name,
            quantity=q + 1,
            unit_price_cents=p.price_cents,
            line_total_cents=p.price_cents * (q + 1),
        )
        for q, p in enumerate(products)
    ]
    return shop_pb2.Order(
        id=str(uuid.uuid4()),
        order_number=f"ORD-{n:06d}",
        customer_id=customer.id,
        # The customer's *current* name/email, as the write model JOINs them.
        customer_name=customer.name,
        customer_email=customer.email,
        items=items,
        total_cents=sum(i.line_total_cents for i in items),
        currency="EUR",
        status=status_value(status),
        version=1 + n % 5,
        created_at=timestamp(created),
        updated_at=timestamp(created + timedelta(seconds=30 * n)),
    )


def build_dataset() -> ReadDataset:
    """Nine products, six customers, eleven orders; fresh random ids every call."""
    ds = ReadDataset()
    # Three products (and later customers, orders) share one timestamp: ties by id.
    product_times = [_at(0), _at(1), _at(1), _at(1), _at(2.5), _at(3), _at(4), _at(4), _at(9)]
    for n, created in enumerate(product_times):
        ds.products.append(_product(n, CATEGORIES[n % len(CATEGORIES)], created))
    ds.deleted_products.append(ds.products.pop(2))  # one of the tied ones

    customer_times = [_at(0), _at(5), _at(5), _at(6), _at(7), _at(8)]
    for n, created in enumerate(customer_times):
        ds.customers.append(_customer(n, created))
    gone = ds.customers.pop(3)
    ds.deleted_customers.append(gone)

    statuses = ("PENDING", "CONFIRMED", "SHIPPED", "DELIVERED", "CANCELLED")
    # Orders may reference the deleted product: an order keeps its lines.
    catalog = [*ds.products, *ds.deleted_products]
    owners = [*ds.customers[:3], gone]
    order_times = [_at(10), _at(11), _at(11), _at(11), _at(12), _at(13), _at(13), _at(14)]
    order_times += [_at(15), _at(16), _at(17), _at(18)]
    for n, created in enumerate(order_times):
        customer = owners[n % len(owners)]
        lines = [catalog[(n + k) % len(catalog)] for k in range(1 + n % 3)]
        ds.orders.append(_order(n, customer, lines, statuses[n % len(statuses)], created))
    ds.deleted_orders.append(ds.orders.pop(5))
    return ds


def _updated_at(doc: shop_pb2.Product | shop_pb2.Customer | shop_pb2.Order) -> datetime:
    return doc.updated_at.ToDatetime(tzinfo=UTC)


async def load_write_model(conn: asyncpg.Connection, ds: ReadDataset) -> None:
    """Rows in products/customers/orders/order_items; deleted ones get ``deleted_at``."""
    deleted_at = _at(100)
    products = [(p, None) for p in ds.products] + [(p, deleted_at) for p in ds.deleted_products]
    await conn.executemany(
        "INSERT INTO products (id, name, description, price_cents, currency, category, stock,"
        " version, created_at, updated_at, deleted_at)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        [
            (uuid.UUID(p.id), p.name, p.description, p.price_cents, p.currency, p.category,
             p.stock, p.version, created_at(p), _updated_at(p), gone)
            for p, gone in products
        ],
    )  # fmt: skip
    customers = [(c, None) for c in ds.customers] + [(c, deleted_at) for c in ds.deleted_customers]
    await conn.executemany(
        "INSERT INTO customers (id, name, email, address, city, postal_code, country,"
        " version, created_at, updated_at, deleted_at)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        [
            (uuid.UUID(c.id), c.name, c.email, c.address, c.city, c.postal_code, c.country,
             c.version, created_at(c), _updated_at(c), gone)
            for c, gone in customers
        ],
    )  # fmt: skip
    orders = [(o, None) for o in ds.orders] + [(o, deleted_at) for o in ds.deleted_orders]
    await conn.executemany(
        "INSERT INTO orders (id, order_number, customer_id, total_cents, currency, status,"
        " version, created_at, updated_at, deleted_at)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        [
            (uuid.UUID(o.id), o.order_number, uuid.UUID(o.customer_id), o.total_cents,
             o.currency, status_name(o.status), o.version, created_at(o), _updated_at(o), gone)
            for o, gone in orders
        ],
    )  # fmt: skip
    # Lines inserted in reverse, so only ORDER BY line_no restores their order.
    await conn.executemany(
        "INSERT INTO order_items (order_id, line_no, product_id, name, quantity,"
        " unit_price_cents, line_total_cents) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        [
            (uuid.UUID(o.id), line_no, uuid.UUID(i.product_id), i.name, i.quantity,
             i.unit_price_cents, i.line_total_cents)
            for o, _ in orders
            for line_no, i in reversed(list(enumerate(o.items, start=1)))
        ],
    )  # fmt: skip


async def load_read_model(
    conn: asyncpg.Connection, ds: ReadDataset, checkpoint: Position = CHECKPOINT
) -> None:
    """Live rows in ``read.*`` (the columns each entity declares, and its document's bytes
    in ``doc``) and the three ``pg:*`` checkpoints at ``checkpoint``."""
    for entity, docs in (
        (entities.PRODUCTS, ds.products),
        (entities.CUSTOMERS, ds.customers),
        (entities.ORDERS, ds.orders),
    ):
        columns = [*entity.columns]
        names = ", ".join([*(c.name for c in columns), "doc"])
        values = ", ".join(
            f"${n}::jsonb" if c.select.endswith("::jsonb") else f"${n}"
            for n, c in enumerate(columns, 1)
        )
        await conn.executemany(
            f"INSERT INTO read.{entity.table} ({names}) VALUES ({values}, ${len(columns) + 1})",
            [(*(c.value(d) for c in columns), d.SerializeToString()) for d in docs],
        )
    for projection in ("pg:products", "pg:customers", "pg:orders"):
        await set_pg_checkpoint(conn, projection, checkpoint)


async def set_pg_checkpoint(conn: asyncpg.Connection, projection: str, position: Position) -> None:
    await conn.execute(
        "INSERT INTO read.projection_checkpoints (projection, xid, seq) VALUES ($1, $2, $3)"
        " ON CONFLICT (projection) DO UPDATE SET xid = $2, seq = $3, updated_at = now()",
        projection,
        position.xid,
        position.seq,
    )


def _redis_entries(
    ds: ReadDataset,
) -> dict[str, list[tuple[shop_pb2.Product | shop_pb2.Customer | shop_pb2.Order, list[str]]]]:
    """Per projection: each live document with the index names (below ``gG:``) it is in."""
    return {
        "products": [(p, ["idx:all", f"idx:category:{p.category}"]) for p in ds.products],
        "customers": [(c, ["idx:all"]) for c in ds.customers],
        "orders": [
            (
                o,
                [
                    "idx:all",
                    f"idx:customer:{o.customer_id}",
                    f"idx:status:{status_name(o.status)}",
                    f"idx:customer_status:{o.customer_id}:{status_name(o.status)}",
                ],
            )
            for o in ds.orders
        ],
    }


async def load_redis(
    client: aioredis.Redis,
    prefix: str,
    ds: ReadDataset,
    checkpoint: Position = CHECKPOINT,
    generation: int = GENERATION,
) -> None:
    """The Redis layout of ARCHITECTURE.md for generation ``generation``, made active.

    The previous generation is left behind holding the *deleted* documents, so
    a reader that ignored ``active`` would return them.
    """
    stale = generation - 1
    deleted: dict[str, Sequence[shop_pb2.Product | shop_pb2.Customer | shop_pb2.Order]] = {
        "products": ds.deleted_products,
        "customers": ds.deleted_customers,
        "orders": ds.deleted_orders,
    }
    for projection, entries in _redis_entries(ds).items():
        # One pipeline per projection (its keys share a hash tag, so one node applies them
        # in order, `active` last). Not MULTI: nothing reads them before the fixture is
        # loaded, and on a cluster client MULTI stops the event loop (common.redis_client).
        pipe = client.pipeline(transaction=False)
        base = ProjectionKeys(prefix, projection).base
        for doc, indexes in entries:
            member = key_of(doc).member()
            pipe.hset(f"{base}:g{generation}:docs", doc.id, doc.SerializeToString())
            for index in indexes:
                pipe.zadd(f"{base}:g{generation}:{index}", {member: 0})
        for doc in deleted[projection]:
            pipe.hset(f"{base}:g{stale}:docs", doc.id, doc.SerializeToString())
            pipe.zadd(f"{base}:g{stale}:idx:all", {key_of(doc).member(): 0})
        pipe.set(f"{base}:g{generation}:checkpoint", checkpoint.to_checkpoint())
        pipe.set(f"{base}:g{stale}:checkpoint", Position(10**9, 0).to_checkpoint())
        pipe.set(f"{base}:next_gen", generation)
        pipe.set(f"{base}:active", generation)
        await pipe.execute()


async def set_redis_checkpoint(
    client: aioredis.Redis,
    prefix: str,
    projection: str,
    position: Position,
    generation: int = GENERATION,
) -> None:
    keys = ProjectionKeys(prefix, projection)
    await client.set(keys.checkpoint(generation), position.to_checkpoint())


async def load_everywhere(settings: Settings, ds: ReadDataset) -> None:
    """Write tables, read models (checkpoint :data:`CHECKPOINT`) and Redis, in one go."""
    conn = await asyncpg.connect(settings.asyncpg_dsn)
    try:
        await _past_the_fixture_positions(conn)
        async with conn.transaction():
            await load_write_model(conn, ds)
            await load_read_model(conn, ds)
    finally:
        await conn.close()
    client = redis_client(settings.redis_url, max_connections=4)
    try:
        await load_redis(client, settings.redis_prefix, ds)
    finally:
        await client.aclose()


async def _past_the_fixture_positions(conn: asyncpg.Connection) -> None:
    """Spend transaction ids until the server's are past the fixture's positions: they are
    tokens of commands already written, which a fresh PostgreSQL (xids in the hundreds)
    would refuse as ahead of the log (``read_server.sources.head``)."""
    needed = CHECKPOINT.xid + 100 - int(await conn.fetchval("SELECT txid_current()"))
    if needed > 0:
        # One transaction per id, in one round trip (a DO block may COMMIT).
        await conn.execute(
            f"DO $$ BEGIN FOR i IN 1..{needed} LOOP PERFORM txid_current(); COMMIT; "
            "END LOOP; END $$"
        )


@dataclass
class Loaded:
    """A dataset stored everywhere, and the read server's resources opened over it."""

    ds: ReadDataset
    app: App

    def sources(self) -> list[QuerySource]:
        """projection, read model, write model."""
        s = self.app.sources
        return [s.projection, s.read_model, s.write_model]


@asynccontextmanager
async def loaded_sources(settings: Settings) -> AsyncIterator[Loaded]:
    """``build_dataset`` + ``load_everywhere`` + the read server's ``bootstrap`` (closed on exit)."""
    ds = build_dataset()
    await load_everywhere(settings, ds)
    app = await bootstrap(settings)
    try:
        yield Loaded(ds, app)
    finally:
        await app.close()


# Hand-written fakes for unit tests of the servicer (no Redis or PostgreSQL).


@dataclass
class FakeSource:
    """A QuerySource answering from dicts/lists of bytes and recording every call."""

    docs: dict[str, bytes] = field(default_factory=dict)
    page: Page = field(default_factory=lambda: Page([], None))
    calls: list[tuple[Any, ...]] = field(default_factory=list)

    async def get(self, entity: Entity, ident: str, freshness: Freshness) -> bytes | None:
        self.calls.append(("get", entity.name, ident, freshness))
        return self.docs.get(ident)

    async def list(
        self, entity: Entity, page: PageRequest, where: Where, freshness: Freshness
    ) -> Page:
        self.calls.append(("list", entity.name, page, dict(where), freshness))
        return self.page


@dataclass
class FakeContext:
    """The one ServicerContext method the servicer uses."""

    remaining: float | None = None

    def time_remaining(self) -> float | None:
        return self.remaining
