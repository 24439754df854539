"""PostgreSQL projection store: ``read.*_read_model`` rows + a ``read.projection_checkpoints`` row.

A batch is one transaction: ``SELECT ... FOR UPDATE`` the checkpoint row (first,
so a rebuild's table swap, which locks the same row, serializes with it),
compare it with the expected position, upsert the changed rows with one
``unnest`` statement, delete the removed ones, and update the checkpoint.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from common import documents
from common.documents import items_to_json, status_name
from common.positions import ORIGIN, Position
from projector.projections import PG, ProjectionKind, projection_name
from projector.stores.port import Change, CheckpointMoved

CHECKPOINTS = "read.projection_checkpoints"
_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]*$")


def _ts(value: Timestamp) -> datetime:
    return value.ToDatetime(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class _Column:
    name: str
    array_type: str  # element type of the unnest parameter
    value: Callable[[Any], object]
    select: str = ""  # expression over u.<name> when the column needs a cast

    @property
    def select_expr(self) -> str:
        return self.select or f"u.{self.name}"


def _plain(name: str, pg_type: str) -> _Column:
    return _Column(name, pg_type, lambda doc: getattr(doc, name))


_COMMON_TAIL = (
    _plain("version", "bigint"),
    _Column("created_at", "timestamptz", lambda d: _ts(d.created_at)),
    _Column("updated_at", "timestamptz", lambda d: _ts(d.updated_at)),
)
_COLUMNS: dict[str, tuple[_Column, ...]] = {
    "products": (
        _plain("id", "uuid"),
        _plain("name", "text"),
        _plain("description", "text"),
        _plain("price_cents", "bigint"),
        _plain("currency", "text"),
        _plain("category", "text"),
        _plain("stock", "integer"),
        *_COMMON_TAIL,
    ),
    "customers": (
        _plain("id", "uuid"),
        _plain("name", "text"),
        _plain("email", "text"),
        _plain("address", "text"),
        _plain("city", "text"),
        _plain("postal_code", "text"),
        _plain("country", "text"),
        *_COMMON_TAIL,
    ),
    "orders": (
        _plain("id", "uuid"),
        _plain("order_number", "text"),
        _plain("customer_id", "uuid"),
        _plain("customer_name", "text"),
        _plain("customer_email", "text"),
        _Column("items", "text", items_to_json, "u.items::jsonb"),
        _Column("items_count", "integer", lambda d: len(d.items)),
        _plain("total_cents", "bigint"),
        _plain("currency", "text"),
        _Column("status", "text", lambda d: status_name(d.status)),
        *_COMMON_TAIL,
    ),
}
_FROM_ROW: dict[str, Callable[[Any], Message]] = {
    "products": documents.product_from_row,
    "customers": documents.customer_from_row,
    "orders": documents.order_from_row,
}


class PgProjectionStore:
    """One PostgreSQL projection: its table and its checkpoint row (both overridable so a
    rebuild can fill a shadow table with its own checkpoint row).

    ``db`` is the pool, or one connection (see :meth:`bound`): then every read sees
    that connection's transaction and :meth:`commit` is a savepoint inside it.
    """

    def __init__(
        self,
        db: asyncpg.Pool | asyncpg.Connection,
        kind: ProjectionKind,
        *,
        table: str | None = None,
        checkpoint_name: str | None = None,
    ) -> None:
        table = table or kind.table
        if not _IDENTIFIER.match(table):
            raise ValueError(f"bad table name {table!r}")
        self.kind = kind
        self.table = f"read.{table}"
        self._db = db
        self._name = checkpoint_name or projection_name(PG, kind)
        columns = _COLUMNS[kind.name]
        names = ", ".join(c.name for c in columns)
        # jsonb arrives as text either way; say so explicitly for order_from_row.
        selected = ", ".join(
            "items::text AS items" if c.name == "items" else c.name for c in columns
        )
        self._select = f"SELECT {selected} FROM {self.table}"
        self._upsert = (
            f"INSERT INTO {self.table} ({names}) "
            f"SELECT {', '.join(c.select_expr for c in columns)} FROM unnest("
            + ", ".join(f"${i}::{c.array_type}[]" for i, c in enumerate(columns, 1))
            + f") AS u({names}) ON CONFLICT (id) DO UPDATE SET "
            + ", ".join(f"{c.name} = EXCLUDED.{c.name}" for c in columns if c.name != "id")
        )
        self._columns = columns
        self._from_row = _FROM_ROW[kind.name]

    def bound(self, conn: asyncpg.Connection) -> PgProjectionStore:
        """The same projection read and written through ``conn`` (inside its transaction)."""
        return PgProjectionStore(
            conn, self.kind, table=self.table.removeprefix("read."), checkpoint_name=self._name
        )

    @property
    def name(self) -> str:
        """The checkpoint row's key (``pg:products``, or a rebuild's shadow name)."""
        return self._name

    async def initialize(self) -> None:
        await self._db.execute(
            f"INSERT INTO {CHECKPOINTS} (projection, xid, seq) VALUES ($1, 0, 0) "
            "ON CONFLICT (projection) DO NOTHING",
            self._name,
        )

    async def checkpoint(self) -> Position:
        row = await self._db.fetchrow(
            f"SELECT xid, seq FROM {CHECKPOINTS} WHERE projection = $1", self._name
        )
        return Position(row["xid"], row["seq"]) if row else ORIGIN

    async def load(self, ids: Collection[str]) -> dict[str, Message]:
        if not ids:
            return {}
        rows = await self._db.fetch(f"{self._select} WHERE id = ANY($1::uuid[])", list(ids))
        return {str(r["id"]): self._from_row(r) for r in rows}

    async def order_ids_by_customer(self, customer_ids: Collection[str]) -> dict[str, list[str]]:
        result: dict[str, list[str]] = {cid: [] for cid in customer_ids}
        if customer_ids:
            rows = await self._db.fetch(
                f"SELECT id, customer_id FROM {self.table} WHERE customer_id = ANY($1::uuid[])",
                list(customer_ids),
            )
            for r in rows:
                result[str(r["customer_id"])].append(str(r["id"]))
        return result

    async def commit(self, expected: Position, new: Position, changes: Sequence[Change]) -> None:
        async with self._connection() as conn, conn.transaction():
            await self._commit(conn, expected, new, changes)

    async def _commit(
        self, conn: asyncpg.Connection, expected: Position, new: Position, changes: Sequence[Change]
    ) -> None:
        # The checkpoint row is locked before the table is touched (lock order, see module doc).
        row = await conn.fetchrow(
            f"SELECT xid, seq FROM {CHECKPOINTS} WHERE projection = $1 FOR UPDATE", self._name
        )
        found = Position(row["xid"], row["seq"]) if row else None
        if found != expected:
            raise CheckpointMoved(expected, found)
        upserts = [c.after for c in changes if c.after is not None]
        deletes = [c.id for c in changes if c.after is None]
        if upserts:
            await conn.execute(
                self._upsert, *([col.value(d) for d in upserts] for col in self._columns)
            )
        if deletes:
            await conn.execute(f"DELETE FROM {self.table} WHERE id = ANY($1::uuid[])", deletes)
        await conn.execute(
            f"UPDATE {CHECKPOINTS} SET xid = $2, seq = $3, updated_at = now() "
            "WHERE projection = $1",
            self._name,
            new.xid,
            new.seq,
        )

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[asyncpg.Connection]:
        if isinstance(self._db, asyncpg.Pool):
            async with self._db.acquire() as conn:
                yield conn
        else:
            yield self._db

    async def all_documents(self) -> dict[str, Message]:
        rows = await self._db.fetch(self._select)
        return {str(r["id"]): self._from_row(r) for r in rows}
