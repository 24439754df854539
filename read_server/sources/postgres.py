"""SOURCE_READ_MODEL and SOURCE_WRITE_MODEL: one PostgreSQL source, two sets of queries.

An :class:`EntityQuery` says where one entity is read from (the ``SELECT ... FROM ...
JOIN`` part, the table alias owning the columns, any standing condition such as
``deleted_at IS NULL``) and how a row gives the document's bytes. :class:`PostgresSource`
runs gets and keyset pages over it. The read models keep each document's bytes in
``doc`` (written by the projector), so a get or a page is one index scan returning bytes;
the write model is JOINed and converted, row by row.

The read models are maintained by the projector: a source built with
``checkpoints`` (projection names per entity) answers only once that projection has
been built, and waits for consistency tokens on its checkpoint (rows and checkpoint
commit together, so a later statement that sees the checkpoint sees the rows). The
write model is the truth: built without ``checkpoints``, it never waits.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from common.cursors import SortKey, sort_key
from common.entities import ENTITIES, Entity
from common.positions import Position
from read_server.sources.base import Freshness, Page, PageRequest, Where
from read_server.sources.batching import Fetch, GetBatcher
from read_server.sources.waiting import BEHIND, CheckpointWatch, HeadCheck, NotReady, Pending


@dataclass(frozen=True, slots=True)
class EntityQuery:
    """Where one entity lives; ``alias`` prefixes its columns (e.g. ``"o."``); ``batched``:
    concurrent gets share one statement (:mod:`read_server.sources.batching`)."""

    select: str
    document: Callable[[Mapping[str, Any]], bytes]  # a row -> the document's bytes
    key: Callable[[Mapping[str, Any]], SortKey]  # a row -> its place in a list
    alias: str = ""
    conditions: tuple[str, ...] = ()
    batched: bool = False
    gets: str = ""  # the select of a get, when it needs less than a page (default: select)


Queries = Mapping[str, EntityQuery]  # entity name -> its query


def _stored(row: Mapping[str, Any]) -> bytes:
    doc: bytes = row["doc"]
    return doc


def _stored_key(entity: Entity) -> Callable[[Mapping[str, Any]], SortKey]:
    """A read-model row's key, from its document (only a page's last row needs one, so
    its columns are not decoded for every row)."""

    def key(row: Mapping[str, Any]) -> SortKey:
        doc: Any = entity.document.FromString(row["doc"])
        created = doc.created_at
        return SortKey(created.seconds * 1_000_000 + created.nanos // 1000, doc.id)

    return key


def _converted(entity: Entity) -> Callable[[Mapping[str, Any]], bytes]:
    return lambda row: entity.from_row(row).SerializeToString()


def _row_key(row: Mapping[str, Any]) -> SortKey:
    return sort_key(row["created_at"], row["id"])


# The read models return the stored bytes (``id`` only for batched gets to find theirs).
READ_MODEL: Queries = {
    e.name: EntityQuery(
        f"SELECT doc FROM read.{e.table}",
        _stored,
        _stored_key(e),
        batched=True,
        gets=f"SELECT id, doc FROM read.{e.table}",
    )
    for e in ENTITIES
}
WRITE_MODEL: Queries = {
    e.name: EntityQuery(
        e.write_model.select, _converted(e), _row_key, e.write_model.alias, (e.write_model.live,)
    )
    for e in ENTITIES
}
# The projections behind READ_MODEL, per entity (and the other PostgreSQL read models).
READ_MODEL_CHECKPOINTS = {
    **{e.name: f"pg:{e.name}" for e in ENTITIES},
    "analytics": "pg:analytics",
    "webhooks": "webhooks:fanout",
}

_CHECKPOINT = "SELECT xid, seq FROM read.projection_checkpoints WHERE projection = $1"
# Waits until the database answering has the token's transaction (a replica: replayed).
Replayed = Callable[[Freshness], Awaitable[None]]
_BEING_BUILT = NotReady("is being built from the event log; retry shortly")


class PostgresSource:
    """Gets and keyset pages over ``queries``; see the module docstring for ``checkpoints``;
    ``check_head`` refuses tokens from the future (:mod:`read_server.sources.waiting`)."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        queries: Queries,
        checkpoints: Mapping[str, str] | None = None,
        check_head: HeadCheck | None = None,
        replayed: Replayed | None = None,
    ) -> None:
        self._pool = pool
        # The write model on a read replica: a token is reached once the replica has
        # replayed its transaction (read_server.sources.replica.ReplicaCommits).
        self._replayed = replayed
        self._queries = queries
        self._checkpoints = dict(checkpoints or {})
        self._built: set[str] = set()  # projections seen built (they stay built)
        self._watch = CheckpointWatch(self._checkpoint, check_head)
        self._batchers = {
            name: GetBatcher(self._fetcher(query), query.document)
            for name, query in queries.items()
            if query.batched
        }

    def _fetcher(self, query: EntityQuery) -> Fetch:
        where = " AND ".join([*query.conditions, f"{query.alias}id = ANY($1)"])
        sql = f"{query.gets or query.select} WHERE {where}"

        async def fetch(ids: list[uuid.UUID]) -> list[asyncpg.Record]:
            rows: list[asyncpg.Record] = await self._pool.fetch(sql, ids)
            return rows

        return fetch

    async def get(self, entity: Entity, ident: str, freshness: Freshness) -> bytes | None:
        await self.ready(entity.name, freshness)
        batcher = self._batchers.get(entity.name)
        if batcher is not None:
            return await batcher.get(ident)
        query = self._queries[entity.name]
        where = [*query.conditions, f"{query.alias}id = $1"]
        row = await self._pool.fetchrow(
            f"{query.gets or query.select} WHERE {' AND '.join(where)}", uuid.UUID(ident)
        )
        return None if row is None else query.document(row)

    async def list(
        self, entity: Entity, page: PageRequest, where: Where, freshness: Freshness
    ) -> Page:
        await self.ready(entity.name, freshness)
        filters = [
            (field, uuid.UUID(value) if entity.filters[field] == "uuid" else value)
            for field, value in where.items()
        ]
        return await self._page(self._queries[entity.name], page, filters)

    async def ready(self, entity: str, freshness: Freshness) -> None:
        """Once the projection behind ``entity`` (a key of the checkpoints given) is built,
        and has reached the token if there is one; UNAVAILABLE when the wait is spent."""
        projection = self._checkpoints.get(entity)
        if projection is None:
            if self._replayed is not None:
                await self._replayed(freshness)
            return
        if freshness.position is None and projection in self._built:
            return
        wanted = freshness.position

        async def attempt() -> Pending | None:
            checkpoint = await self._checkpoint(projection)
            if checkpoint is None:
                return _BEING_BUILT
            self._built.add(projection)
            return None if wanted is None or checkpoint >= wanted else BEHIND

        await self._watch.until_fresh(projection, freshness, attempt)

    async def _checkpoint(self, projection: str) -> Position | None:
        row = await self._pool.fetchrow(_CHECKPOINT, projection)
        return None if row is None else Position(row["xid"], row["seq"])

    async def _page(
        self, query: EntityQuery, page: PageRequest, filters: Sequence[tuple[str, object]] = ()
    ) -> Page:
        """Newest first, strictly after ``page.after``, where every ``(column, value)`` holds."""
        a = query.alias
        where = list(query.conditions)
        args: list[object] = []
        for column, value in filters:
            args.append(value)
            where.append(f"{a}{column} = ${len(args)}")
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
        items = [query.document(row) for row in rows]
        last = rows[-1] if more else None
        return Page(items, None if last is None else query.key(last))
