"""PostgreSQL projection store: ``read.*_read_model`` rows + a ``read.projection_checkpoints`` row.

A batch is one transaction: ``SELECT ... FOR UPDATE`` the checkpoint row (first,
so a rebuild's table swap, which locks the same row, serializes with it),
compare it with the expected position, upsert the changed rows with one
``unnest`` statement, delete the removed ones, and update the checkpoint.

A copy (:meth:`PgProjectionStore.new_copy`) is a shadow table with its own
checkpoint row (:mod:`pg_shadow`); switching to it swaps the tables in one
transaction that holds the live checkpoint row, after catching the shadow up to
the horizon inside that transaction.
"""

from __future__ import annotations

import contextlib
import operator
import re
from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from common import documents
from common.documents import items_to_json, payment_status_name, status_name, to_datetime
from common.positions import Position
from projector.errors import CheckpointMoved, StoreLost
from projector.projections import PG, ProjectionKind, projection_name
from projector.stores import pg_checkpoints, pg_shadow, pg_switch
from projector.stores.port import Change, ProjectionStore, StoreCatchUp

_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]*$")
_BAD_ITEMS_COUNT = """
SELECT id, items_count, jsonb_array_length(items) AS actual
FROM {table} WHERE items_count <> jsonb_array_length(items)
"""


def _ts(value: Timestamp) -> datetime:
    return to_datetime(value)


@dataclass(frozen=True, slots=True)
class _Column:
    name: str
    array_type: str  # element type of the unnest parameter
    value: Callable[[Any], object]
    select: str = ""  # expression over u.<name> when the column needs a cast

    @property
    def select_expr(self) -> str:
        return self.select or f"u.{self.name}"


_PG_TYPES = {
    FieldDescriptor.TYPE_STRING: "text",
    FieldDescriptor.TYPE_INT64: "bigint",
    FieldDescriptor.TYPE_INT32: "integer",
}
# Columns whose type or value is not the document field's own.
_SPECIAL: dict[str, tuple[_Column, ...]] = {
    "id": (_Column("id", "uuid", lambda d: d.id),),
    "customer_id": (_Column("customer_id", "uuid", lambda d: d.customer_id),),
    "items": (
        _Column("items", "text", items_to_json, "u.items::jsonb"),
        _Column("items_count", "integer", lambda d: len(d.items)),
    ),
    "status": (_Column("status", "text", lambda d: status_name(d.status)),),
    "payment_status": (
        _Column("payment_status", "text", lambda d: payment_status_name(d.payment_status)),
    ),
    "created_at": (_Column("created_at", "timestamptz", lambda d: _ts(d.created_at)),),
    "updated_at": (_Column("updated_at", "timestamptz", lambda d: _ts(d.updated_at)),),
}


def _columns(kind: ProjectionKind) -> tuple[_Column, ...]:
    """The read-model table's columns, derived from the entity's fields and document."""
    descriptor = kind.document.DESCRIPTOR
    columns: list[_Column] = []
    for name in ("id", *kind.fields, *documents.DOCUMENT_TAIL):
        if name in _SPECIAL:
            columns += _SPECIAL[name]
        else:
            pg_type = _PG_TYPES[descriptor.fields_by_name[name].type]
            columns.append(_Column(name, pg_type, operator.attrgetter(name)))
    return tuple(columns)


_FROM_ROW: dict[str, Callable[[Any], Message]] = {
    "products": documents.product_from_row,
    "customers": documents.customer_from_row,
    "orders": documents.order_from_row,
}


class PgProjectionStore:
    """One PostgreSQL projection: its table and its checkpoint row (a copy has a shadow
    table and a checkpoint row of its own).

    ``db`` is the pool, or one connection (see :meth:`bound`): then every read sees
    that connection's transaction and :meth:`commit` runs inside it.
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
        columns = _columns(kind)
        # The document's columns; jsonb arrives as text either way: say so for order_from_row.
        selected = ", ".join(
            "items::text AS items" if c.name == "items" else c.name
            for c in columns
            if c.name != "items_count"
        )
        self._select = f"SELECT {selected} FROM {self.table}"
        all_names = ", ".join(c.name for c in columns)
        self._upsert = (
            f"INSERT INTO {self.table} ({all_names}) "
            f"SELECT {', '.join(c.select_expr for c in columns)} FROM unnest("
            + ", ".join(f"${i}::{c.array_type}[]" for i, c in enumerate(columns, 1))
            + f") AS u({all_names}) ON CONFLICT (id) DO UPDATE SET "
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

    @property
    def is_copy(self) -> bool:
        return self._name.endswith(pg_shadow.SHADOW_SUFFIX)

    async def checkpoint(self) -> Position:
        found = await pg_checkpoints.read(self._db, self._name)
        if found is None:
            raise StoreLost(self._name, "has no checkpoint row (never built)")
        return found

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
            # The checkpoint row is locked before the table is touched (lock order, see
            # the module docstring).
            found = await pg_checkpoints.lock(conn, self._name)
            if found is None:
                raise StoreLost(self._name, "has no checkpoint row", expected)
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
            await pg_checkpoints.write(conn, self._name, new)

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

    # -- copies -----------------------------------------------------------------------------

    async def new_copy(self) -> PgProjectionStore:
        pool = self._pool()
        shadow_name = self._name + pg_shadow.SHADOW_SUFFIX
        shadow = await pg_shadow.create_shadow(pool, self.kind.table, shadow_name)
        return PgProjectionStore(pool, self.kind, table=shadow, checkpoint_name=shadow_name)

    async def switch_to(self, copy: ProjectionStore, catch_up: StoreCatchUp) -> Position:
        if not isinstance(copy, PgProjectionStore):
            raise TypeError(f"cannot switch {self._name} to {copy.name}")
        pool = self._pool()
        await catch_up(copy, None)
        # Fresh statistics, so queries plan well on the new table from the first read.
        await pool.execute(f"ANALYZE {copy.table}")
        table = self.kind.table
        return await pg_switch.switch_in(
            pool,
            self._name,
            copy.name,
            lambda conn: catch_up(copy.bound(conn), conn),
            lambda conn: pg_shadow.swap_in_shadow(conn, table),
        )

    async def discard(self) -> None:
        await pg_shadow.drop_shadow(self._pool(), self.kind.table, self._name)

    async def describe(self) -> str:
        await self.checkpoint()
        return f"table {self.table}"

    async def integrity_problems(self, expected: Mapping[str, Message]) -> list[str]:
        if "items_count" not in (c.name for c in self._columns):
            return []
        rows = await self._db.fetch(_BAD_ITEMS_COUNT.format(table=self.table))
        return [
            f"{r['id']}: items_count: projection={r['items_count']} items={r['actual']}"
            for r in rows
        ]

    def _pool(self) -> asyncpg.Pool:
        if not isinstance(self._db, asyncpg.Pool):
            raise TypeError("copies are made and switched through the pool, not a connection")
        return self._db
