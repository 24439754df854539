"""PostgreSQL projection store: ``read.*_read_model`` rows + a ``read.projection_checkpoints`` row.

A row holds the document's wire bytes (``doc``: what reads return, one index scan and no
conversion) beside the columns reads filter and sort on (:mod:`common.entities._columns`);
verify checks that the two agree. A batch is one transaction: ``SELECT ... FOR UPDATE`` the checkpoint row (first,
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
import re
from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
from google.protobuf.message import Message

from common.entities import Column, Entity
from common.entities._columns import differences
from common.positions import Position
from common.roles import share_created
from projector.errors import StoreLost
from projector.projections import PG, projection_name
from projector.segments import Segment, all_segments
from projector.stores import pg_checkpoints, pg_shadow, pg_switch
from projector.stores.port import Change, ProjectionStore, StoreCatchUp

_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]*$")
# The document's wire bytes, kept beside its columns: what the read server returns.
_DOC = Column("doc", "bytea", lambda d: d.SerializeToString())


class PgProjectionStore:
    """One PostgreSQL projection: its table and its checkpoint row (a copy has a shadow
    table and a checkpoint row of its own).

    ``db`` is the pool, or one connection (see :meth:`bound`): then every read sees
    that connection's transaction and :meth:`commit` runs inside it. ``segments``: how
    many segments the live projection is split into (:mod:`projector.segments`, a row
    each); ``segment``: the one this store commits as (``None``: the projection as a
    whole, which a split live projection only reads and switches).
    """

    def __init__(
        self,
        db: asyncpg.Pool | asyncpg.Connection,
        kind: Entity,
        *,
        table: str | None = None,
        checkpoint_name: str | None = None,
        segments: int = 1,
        segment: Segment | None = None,
    ) -> None:
        table = table or kind.table
        if not _IDENTIFIER.match(table):
            raise ValueError(f"bad table name {table!r}")
        if segment is not None and segment.count != segments:
            raise ValueError(f"segment {segment.label} of a projection split {segments} ways")
        self.kind = kind
        self.table = f"read.{table}"
        self._db = db
        self.segments = segments
        self.segment = segment
        self.builds_alone = False  # a copy is built whole, then split
        # The projection's checkpoint row (readers read it; a split one's is the lowest of
        # its segments'), and the row this store commits (a segment's own).
        self._whole = checkpoint_name or projection_name(PG, kind)
        self._name = self._whole if segment is None else segment.name(self._whole)
        columns = (*kind.columns, _DOC)
        self._select = f"SELECT id, doc FROM {self.table}"
        all_names = ", ".join(c.name for c in columns)
        self._upsert = (
            f"INSERT INTO {self.table} ({all_names}) "
            f"SELECT {', '.join(c.select_expr for c in columns)} FROM unnest("
            + ", ".join(f"${i}::{c.array_type}[]" for i, c in enumerate(columns, 1))
            + f") AS u({all_names}) ON CONFLICT (id) DO UPDATE SET "
            + ", ".join(f"{c.name} = EXCLUDED.{c.name}" for c in columns if c.name != "id")
        )
        self._columns = columns

    def bound(self, conn: asyncpg.Connection) -> PgProjectionStore:
        """The same projection read and written through ``conn`` (inside its transaction)."""
        return PgProjectionStore(
            conn,
            self.kind,
            table=self.table.removeprefix("read."),
            checkpoint_name=self._whole,
            segments=self.segments,
            segment=self.segment,
        )

    def split(self, segment: Segment) -> PgProjectionStore:
        """The live projection as ``segment`` commits it."""
        return PgProjectionStore(
            self._db,
            self.kind,
            table=self.table.removeprefix("read."),
            checkpoint_name=self._whole,
            segments=self.segments,
            segment=segment,
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
        if self.segment is None and not self.is_copy:
            # A segment's row exists only in the split it was switched in with; the whole's
            # row is there whatever the split: compare the split with this process's.
            split_into = len(await pg_checkpoints.segments(self._db, self._name)) or 1
            if split_into != self.segments:
                raise StoreLost(
                    self._name,
                    f"is split into {split_into} segment(s), this process runs {self.segments}",
                )
        return found

    async def load(self, ids: Collection[str]) -> dict[str, Message]:
        if not ids:
            return {}
        rows = await self._db.fetch(f"{self._select} WHERE id = ANY($1::uuid[])", list(ids))
        return {str(r["id"]): self._parse(r["doc"]) for r in rows}

    async def ids_by(self, field: str, values: Collection[str]) -> dict[str, list[str]]:
        column = next(c for c in self._columns if c.name == field)
        result: dict[str, list[str]] = {v: [] for v in values}
        if values:
            rows = await self._db.fetch(
                f"SELECT id, {field} AS value FROM {self.table} "
                f"WHERE {field} = ANY($1::{column.array_type}[])",
                list(values),
            )
            for r in rows:
                result[str(r["value"])].append(str(r["id"]))
        return result

    async def commit(self, expected: Position, new: Position, changes: Sequence[Change]) -> None:
        if self.segment is None and self.segments > 1 and not self.is_copy:
            raise TypeError(f"{self._name} is split into segments: they commit, not the whole")
        if not changes and self.segment is None:
            # Most batches of a projection following the log: the horizon moved over other
            # aggregates' events. The checkpoint alone, one statement, no transaction.
            await pg_checkpoints.advance(self._db, self._name, expected, new)
            return
        async with self._connection() as conn, conn.transaction():
            # The checkpoint row is locked before the table is touched (lock order, see
            # the module docstring); a segment's, after the whole's, which it moves too.
            if self.segment is not None and await pg_checkpoints.lock(conn, self._whole) is None:
                raise StoreLost(self._whole, "has no checkpoint row", expected)
            await pg_checkpoints.advance(conn, self._name, expected, new)
            upserts = [c.after for c in changes if c.after is not None]
            deletes = [c.id for c in changes if c.after is None]
            if upserts:
                await conn.execute(
                    self._upsert, *([col.value(d) for d in upserts] for col in self._columns)
                )
            if deletes:
                await conn.execute(f"DELETE FROM {self.table} WHERE id = ANY($1::uuid[])", deletes)
            if self.segment is not None:
                await pg_checkpoints.write_lowest(conn, self._whole)

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[asyncpg.Connection]:
        if isinstance(self._db, asyncpg.Pool):
            async with self._db.acquire() as conn:
                yield conn
        else:
            yield self._db

    async def all_documents(self) -> dict[str, Message]:
        rows = await self._db.fetch(self._select)
        return {str(r["id"]): self._parse(r["doc"]) for r in rows}

    def _parse(self, raw: bytes) -> Message:
        doc = self.kind.document()
        doc.ParseFromString(raw)
        return doc

    # -- copies -----------------------------------------------------------------------------

    async def new_copy(self) -> PgProjectionStore:
        pool = self._pool()
        shadow_name = self._whole + pg_shadow.SHADOW_SUFFIX
        shadow = await pg_shadow.create_shadow(pool, self.kind.table, shadow_name)
        # Readable by the reader once swapped in, whoever runs the projector.
        async with pool.acquire() as conn:
            await share_created(conn, tables=[f"read.{shadow}"], home="read")
        return PgProjectionStore(pool, self.kind, table=shadow, checkpoint_name=shadow_name)

    async def switch_to(self, copy: ProjectionStore, catch_up: StoreCatchUp) -> Position:
        if not isinstance(copy, PgProjectionStore):
            raise TypeError(f"cannot switch {self._name} to {copy.name}")
        pool = self._pool()
        await catch_up(copy, None)
        # Fresh statistics, so queries plan well on the new table from the first read.
        await pool.execute(f"ANALYZE {copy.table}")
        table = self.kind.table
        split = [] if self.segments == 1 else all_segments(self.segments)
        return await pg_switch.switch_in(
            pool,
            self._whole,
            copy.name,
            lambda conn: catch_up(copy.bound(conn), conn),
            lambda conn: pg_shadow.swap_in_shadow(conn, table),
            [s.name(self._whole) for s in split],
        )

    async def discard(self) -> None:
        await pg_shadow.drop_shadow(self._pool(), self.kind.table, self._name)

    async def describe(self) -> str:
        await self.checkpoint()
        return f"table {self.table}"

    async def integrity_state(self) -> _Columns:
        names = ", ".join(c.name for c in self.kind.columns)
        rows = await self._db.fetch(f"SELECT {names}, doc FROM {self.table}")
        return _Columns(self.kind.columns, {str(r["id"]): dict(r) for r in rows}, self._parse)

    def _pool(self) -> asyncpg.Pool:
        if not isinstance(self._db, asyncpg.Pool):
            raise TypeError("copies are made and switched through the pool, not a connection")
        return self._db


@dataclass(frozen=True, slots=True)
class _Columns:
    """Each row's columns, which reads filter and sort on, against the document it holds
    (``doc``, which reads return): they must agree."""

    columns: Sequence[Column]
    rows: Mapping[str, Mapping[str, Any]]
    parse: Any  # bytes -> the document

    def problems(self, expected: Mapping[str, Message], skip: Collection[str]) -> list[str]:
        return [
            f"{doc_id}: {problem}"
            for doc_id, row in sorted(self.rows.items())
            if doc_id not in skip
            for problem in differences(self.columns, row, self.parse(row["doc"]))
        ]
