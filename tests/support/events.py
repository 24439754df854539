"""Producing events for projector tests without the write server.

:func:`append_events` inserts rows into ``events`` inside the caller's
transaction (so a test can hold one open). :class:`Shop` is a small stand-in for
the write side: each command is one transaction that updates the write tables
and appends its events (sharing one ``occurred_at``) and NOTIFYs, as the
contract in common/events.py describes, so ``verify`` has a write model to
compare with.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg

from common import events as ev
from common.positions import Position


@dataclass(frozen=True, slots=True)
class NewEvent:
    aggregate_type: str
    aggregate_id: str
    aggregate_version: int
    event_type: str
    payload: dict[str, Any]
    occurred_at: datetime
    # The payload's schema; None = the current one of its type (what the write side emits).
    schema_version: int | None = None


def now() -> datetime:
    return datetime.now(UTC)


async def append_events(
    conn: asyncpg.Connection, events: Sequence[NewEvent], *, notify: bool = True
) -> list[Position]:
    """Insert ``events`` in the connection's current transaction; their positions."""
    positions: list[Position] = []
    for e in events:
        row = await conn.fetchrow(
            "INSERT INTO events (aggregate_type, aggregate_id, aggregate_version, event_type, "
            "payload, occurred_at, schema_version) VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7) "
            "RETURNING seq, xid::text::bigint AS xid",
            e.aggregate_type,
            uuid.UUID(e.aggregate_id),
            e.aggregate_version,
            e.event_type,
            json.dumps(e.payload),
            e.occurred_at,
            e.schema_version or ev.SCHEMA_VERSIONS.get(e.event_type, 1),
        )
        positions.append(Position(row["xid"], row["seq"]))
    if notify:
        await conn.execute("SELECT pg_notify($1, '')", ev.NOTIFY_CHANNEL)
    return positions


async def eventually(
    check: Callable[[], Awaitable[bool]], *, within: float = 15.0, interval: float = 0.05
) -> None:
    """Poll ``check`` until it returns True; AssertionError after ``within`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not await check():
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {within}s")
        await asyncio.sleep(interval)


async def all_built(consumers: Sequence[Any], within: float = 15.0) -> None:
    """Until every consumer has been built (a projector has just started). An outage of a
    store (e.g. a Redis Cluster still settling after a failover) is "not yet", as the
    projector itself takes it."""
    from common.outages import is_transient
    from projector.errors import StoreLost

    async def built() -> bool:
        try:
            for consumer in consumers:
                await consumer.checkpoint()
        except StoreLost:
            return False
        except Exception as exc:
            if is_transient(exc):
                return False
            raise
        return True

    await eventually(built, within=within)


_STATUS_EVENTS = {
    "CONFIRMED": ev.ORDER_CONFIRMED,
    "SHIPPED": ev.ORDER_SHIPPED,
    "DELIVERED": ev.ORDER_DELIVERED,
    "CANCELLED": ev.ORDER_CANCELLED,
}


class Shop:
    """Write-side stand-in: one transaction per command (write tables + events + NOTIFY)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self._counter = 0

    def _next(self) -> int:
        self._counter += 1
        return self._counter

    # -- products ---------------------------------------------------------------------------

    async def create_products_until(self, done: asyncio.Event, pause_s: float = 0.02) -> None:
        """A product every ``pause_s`` until ``done`` (writes under a rebuild's readers)."""
        while not done.is_set():
            await self.create_product()
            await asyncio.sleep(pause_s)

    async def create_product(
        self,
        *,
        name: str | None = None,
        price_cents: int = 1000,
        category: str = "books",
        stock: int = 100,
        description: str = "",
        currency: str = "EUR",
    ) -> str:
        pid, at = str(uuid.uuid4()), now()
        fields = {
            "name": name or f"product {self._next()}",
            "description": description,
            "price_cents": price_cents,
            "currency": currency,
            "category": category,
            "stock": stock,
        }
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO products (id, name, description, price_cents, currency, category, "
                "stock, version, created_at, updated_at) VALUES ($1,$2,$3,$4,$5,$6,$7,1,$8,$8)",
                uuid.UUID(pid),
                *fields.values(),
                at,
            )
            await append_events(
                conn, [NewEvent(ev.PRODUCT, pid, 1, ev.PRODUCT_CREATED, fields, at)]
            )
        return pid

    async def update_product(self, product_id: str, **changes: Any) -> None:
        await self._update("products", ev.PRODUCT, ev.PRODUCT_UPDATED, product_id, changes)

    async def delete_product(self, product_id: str) -> None:
        await self._delete("products", ev.PRODUCT, ev.PRODUCT_DELETED, product_id)

    # -- customers --------------------------------------------------------------------------

    async def create_customer(self, *, name: str | None = None, email: str | None = None) -> str:
        cid, at = str(uuid.uuid4()), now()
        n = self._next()
        fields = {
            "name": name or f"customer {n}",
            "email": email or f"c{n}-{cid[:8]}@example.com",
            "address": f"{n} Main Street",
            "city": "Springfield",
            "postal_code": f"{10000 + n}",
            "country": "US",
        }
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO customers (id, name, email, address, city, postal_code, country, "
                "version, created_at, updated_at) VALUES ($1,$2,$3,$4,$5,$6,$7,1,$8,$8)",
                uuid.UUID(cid),
                *fields.values(),
                at,
            )
            await append_events(
                conn, [NewEvent(ev.CUSTOMER, cid, 1, ev.CUSTOMER_CREATED, fields, at)]
            )
        return cid

    async def update_customer(self, customer_id: str, **changes: Any) -> None:
        await self._update("customers", ev.CUSTOMER, ev.CUSTOMER_UPDATED, customer_id, changes)

    async def delete_customer(self, customer_id: str) -> None:
        await self._delete("customers", ev.CUSTOMER, ev.CUSTOMER_DELETED, customer_id)

    # -- orders -----------------------------------------------------------------------------

    async def place_order(
        self, customer_id: str, lines: Sequence[tuple[str, int]], *, currency: str = "EUR"
    ) -> str:
        """Place an order of ``(product_id, quantity)`` lines; reserves stock."""
        oid, at = str(uuid.uuid4()), now()
        async with self.pool.acquire() as conn, conn.transaction():
            customer = await conn.fetchrow(
                "SELECT name, email FROM customers WHERE id = $1 FOR UPDATE", uuid.UUID(customer_id)
            )
            events: list[NewEvent] = []
            items: list[dict[str, Any]] = []
            for product_id, quantity in lines:
                p = await conn.fetchrow(
                    "UPDATE products SET stock = stock - $2, version = version + 1, "
                    "updated_at = $3 WHERE id = $1 RETURNING name, price_cents, stock, version",
                    uuid.UUID(product_id),
                    quantity,
                    at,
                )
                items.append(
                    {
                        "product_id": product_id,
                        "name": p["name"],
                        "quantity": quantity,
                        "unit_price_cents": p["price_cents"],
                        "line_total_cents": p["price_cents"] * quantity,
                    }
                )
                events.append(
                    NewEvent(
                        ev.PRODUCT,
                        product_id,
                        p["version"],
                        ev.PRODUCT_STOCK_RESERVED,
                        {"order_id": oid, "quantity": quantity, "stock": p["stock"]},
                        at,
                    )
                )
            number = f"ORD-{await conn.fetchval('SELECT nextval($1)', 'order_number_seq'):06d}"
            total = sum(i["line_total_cents"] for i in items)
            await conn.execute(
                "INSERT INTO orders (id, order_number, customer_id, total_cents, currency, status, "
                "version, created_at, updated_at) VALUES ($1,$2,$3,$4,$6,'PENDING',1,$5,$5)",
                uuid.UUID(oid),
                number,
                uuid.UUID(customer_id),
                total,
                at,
                currency,
            )
            for line_no, item in enumerate(items, 1):
                await conn.execute(
                    "INSERT INTO order_items (order_id, line_no, product_id, name, quantity, "
                    "unit_price_cents, line_total_cents) VALUES ($1,$2,$3,$4,$5,$6,$7)",
                    uuid.UUID(oid),
                    line_no,
                    uuid.UUID(item["product_id"]),
                    item["name"],
                    item["quantity"],
                    item["unit_price_cents"],
                    item["line_total_cents"],
                )
            placed = {
                "order_number": number,
                "customer": {
                    "id": customer_id,
                    "name": customer["name"],
                    "email": customer["email"],
                },
                "items": items,
                "total_cents": total,
                "currency": currency,
                "status": "PENDING",
            }
            events.append(NewEvent(ev.ORDER, oid, 1, ev.ORDER_PLACED, placed, at))
            await append_events(conn, events)
        return oid

    async def set_order_status(self, order_id: str, status: str) -> None:
        """Confirm/ship/deliver/cancel (cancelling releases the stock)."""
        at = now()
        async with self.pool.acquire() as conn, conn.transaction():
            version = await conn.fetchval(
                "UPDATE orders SET status = $2, version = version + 1, updated_at = $3 "
                "WHERE id = $1 RETURNING version",
                uuid.UUID(order_id),
                status,
                at,
            )
            events = [
                NewEvent(
                    ev.ORDER, order_id, version, _STATUS_EVENTS[status], {"status": status}, at
                )
            ]
            if status == "CANCELLED":
                lines = await conn.fetch(
                    "SELECT product_id, quantity FROM order_items WHERE order_id = $1 "
                    "ORDER BY line_no",
                    uuid.UUID(order_id),
                )
                for line in lines:
                    p = await conn.fetchrow(
                        "UPDATE products SET stock = stock + $2, version = version + 1, "
                        "updated_at = $3 WHERE id = $1 RETURNING stock, version",
                        line["product_id"],
                        line["quantity"],
                        at,
                    )
                    payload = {
                        "order_id": order_id,
                        "quantity": line["quantity"],
                        "stock": p["stock"],
                    }
                    events.insert(
                        0,
                        NewEvent(
                            ev.PRODUCT,
                            str(line["product_id"]),
                            p["version"],
                            ev.PRODUCT_STOCK_RELEASED,
                            payload,
                            at,
                        ),
                    )
            await append_events(conn, events)

    async def delete_order(self, order_id: str) -> None:
        await self._delete("orders", ev.ORDER, ev.ORDER_DELETED, order_id)

    async def payment(
        self, order_id: str, event_type: str, payment_status: str | None, **payload: Any
    ) -> None:
        """Append a payment event (``PaymentCaptured`` ...) to an order and set its
        ``payment_status`` (``None``: leave it, as ``RefundRequested`` does)."""
        at = now()
        async with self.pool.acquire() as conn, conn.transaction():
            version = await conn.fetchval(
                "UPDATE orders SET payment_status = coalesce($3, payment_status),"
                " version = version + 1, updated_at = $2 WHERE id = $1 RETURNING version",
                uuid.UUID(order_id),
                at,
                payment_status,
            )
            await append_events(
                conn, [NewEvent(ev.ORDER, order_id, version, event_type, payload, at)]
            )

    # -- shared -----------------------------------------------------------------------------

    async def _update(
        self, table: str, aggregate: str, event_type: str, ident: str, changes: dict[str, Any]
    ) -> None:
        at = now()
        sets = ", ".join(f"{col} = ${i}" for i, col in enumerate(changes, 3))
        async with self.pool.acquire() as conn, conn.transaction():
            version = await conn.fetchval(
                f"UPDATE {table} SET {sets}, version = version + 1, updated_at = $2 "
                "WHERE id = $1 RETURNING version",
                uuid.UUID(ident),
                at,
                *changes.values(),
            )
            await append_events(
                conn, [NewEvent(aggregate, ident, version, event_type, {"changes": changes}, at)]
            )

    async def _delete(self, table: str, aggregate: str, event_type: str, ident: str) -> None:
        at = now()
        async with self.pool.acquire() as conn, conn.transaction():
            version = await conn.fetchval(
                f"UPDATE {table} SET deleted_at = $2, version = version + 1, updated_at = $2 "
                "WHERE id = $1 RETURNING version",
                uuid.UUID(ident),
                at,
            )
            await append_events(conn, [NewEvent(aggregate, ident, version, event_type, {}, at)])


async def append_poison_update(conn: asyncpg.Connection, product_id: str) -> int:
    """In the connection's transaction: the next version of ``product_id`` as an update
    event whose payload no reducer accepts (a poison event); its seq."""
    at = now()
    version = await conn.fetchval(
        "UPDATE products SET version = version + 1, updated_at = $2 WHERE id = $1 "
        "RETURNING version",
        uuid.UUID(product_id),
        at,
    )
    event = NewEvent(
        ev.PRODUCT, product_id, version, ev.PRODUCT_UPDATED, {"changes": {"stock": "lots"}}, at
    )
    (position,) = await append_events(conn, [event])
    return position.seq


async def append_poison_confirmation(conn: asyncpg.Connection, order_id: str) -> int:
    """In the connection's transaction: ``order_id`` confirmed in the write model, its event
    saying another status (a poison event for the order projections); its seq."""
    at = now()
    version = await conn.fetchval(
        "UPDATE orders SET status = 'CONFIRMED', version = version + 1, updated_at = $2 "
        "WHERE id = $1 RETURNING version",
        uuid.UUID(order_id),
        at,
    )
    event = NewEvent(ev.ORDER, order_id, version, ev.ORDER_CONFIRMED, {"status": "SHIPPED"}, at)
    (position,) = await append_events(conn, [event])
    return position.seq


async def out_of_log_order(db: asyncpg.Connection | asyncpg.Pool) -> list[tuple[str, int, int]]:
    """Events whose aggregate version does not follow the one before it in the projector's
    ``(xid, seq)`` order: (aggregate id, version, the version before it). The write side
    must leave none (docs/ARCHITECTURE.md, "Per-aggregate order")."""
    rows = await db.fetch(
        "SELECT aggregate_id::text, aggregate_version, previous FROM ("
        " SELECT aggregate_id, aggregate_version, lag(aggregate_version) OVER ("
        "  PARTITION BY aggregate_id ORDER BY xid, seq) AS previous FROM events) t"
        " WHERE previous IS NOT NULL AND aggregate_version <> previous + 1"
    )
    return [tuple(r) for r in rows]
