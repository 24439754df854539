"""Keyset-paginated queries shared by the two PostgreSQL sources.

An :class:`EntityQuery` describes where one entity type is read from (the
``SELECT ... FROM ... JOIN`` part, the table alias owning ``id``/``created_at``
and any standing condition such as ``deleted_at IS NULL``); :class:`PgReader`
runs gets and pages over it and serializes each row to its protobuf document.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
from google.protobuf.message import Message

from common.cursors import sort_key
from common.positions import Position
from read_server.sources.base import Page, PageRequest


@dataclass(frozen=True, slots=True)
class EntityQuery:
    """Where one entity type lives; ``alias`` prefixes ``id`` and ``created_at`` (e.g. ``"o."``)."""

    select: str
    from_row: Callable[[Mapping[str, Any]], Message]
    alias: str = ""
    conditions: tuple[str, ...] = ()


class PgReader:
    """Runs gets and keyset pages over an asyncpg pool."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def get(self, query: EntityQuery, ident: str) -> bytes | None:
        """The document with id ``ident`` (a canonical UUID), or ``None``."""
        where = [*query.conditions, f"{query.alias}id = $1"]
        row = await self._pool.fetchrow(
            f"{query.select} WHERE {' AND '.join(where)}", uuid.UUID(ident)
        )
        return None if row is None else query.from_row(row).SerializeToString()

    async def page(
        self,
        query: EntityQuery,
        page: PageRequest,
        filters: Sequence[tuple[str, object]] = (),
    ) -> Page:
        """Newest first, strictly after ``page.after``, where every ``(column, value)`` holds."""
        where = list(query.conditions)
        args: list[object] = []
        for column, value in filters:
            args.append(value)
            where.append(f"{column} = ${len(args)}")
        a = query.alias
        if page.after is not None:
            args += [page.after.created_at, uuid.UUID(page.after.id)]
            # A row comparison, so the (created_at DESC, id DESC) indexes serve it.
            where.append(f"({a}created_at, {a}id) < (${len(args) - 1}, ${len(args)})")
        args.append(page.size + 1)
        sql = query.select
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += f" ORDER BY {a}created_at DESC, {a}id DESC LIMIT ${len(args)}"
        rows = await self._pool.fetch(sql, *args)
        more = len(rows) > page.size
        rows = rows[: page.size]
        items = [query.from_row(row).SerializeToString() for row in rows]
        last = rows[-1] if more else None
        return Page(items, None if last is None else sort_key(last["created_at"], last["id"]))

    async def checkpoint(self, projection: str) -> Position | None:
        """The PostgreSQL projection's checkpoint, ``None`` if it never ran."""
        row = await self._pool.fetchrow(
            "SELECT xid, seq FROM read.projection_checkpoints WHERE projection = $1", projection
        )
        return None if row is None else Position(row["xid"], row["seq"])
