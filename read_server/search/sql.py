"""The search statements over the read models' ``search`` columns (migration 0003).

A hit is a row whose weighted ``search`` vector matches ``to_tsquery('simple', $1)``
(the GIN index finds them); it is ranked by ``ts_rank_cd`` with PostgreSQL's
default weights spelled out (A = name 1.0, B 0.4, C 0.2, D 0.1), computed as
float8 so that the keyset comparison of the next page is exact. Order: rank
descending, then id ascending, a total order. The read-model tables hold only
live entities, so no deleted row can be found.

The query text is always a bound parameter: only :mod:`read_server.search.query`
builds it, from letters and digits.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import asyncpg

from common import entities
from common.entities import Entity
from read_server.search.cursor import SearchCursor
from read_server.search.query import SearchQuery

# ts_rank_cd's weights for {D, C, B, A}: the defaults, written out because the
# ranking promise ("a name match counts most") rests on them.
RANK_WEIGHTS = "{0.1, 0.2, 0.4, 1.0}"


@dataclass(frozen=True, slots=True)
class SearchTarget:
    """One searchable read model. ``entity`` names its projection for
    ``PostgresSource.ready`` and binds page tokens to this search."""

    entity: str
    first: str  # $1 tsquery text, $2 row limit
    after: str  # $1 tsquery text, $2 rank, $3 id, $4 row limit: resumes after a cursor


def _target(entity: Entity) -> SearchTarget:
    """The search over ``entity``'s read model, whose rows hold the documents' bytes."""
    hits = (
        f"SELECT id, doc, ts_rank_cd('{RANK_WEIGHTS}', search, q)::float8 AS rank"
        f" FROM read.{entity.table}, to_tsquery('simple', $1) AS q WHERE search @@ q"
    )
    order = "ORDER BY rank DESC, id"
    return SearchTarget(
        entity.name,
        first=f"SELECT * FROM ({hits}) AS hits {order} LIMIT $2",
        after=(
            f"SELECT * FROM ({hits}) AS hits WHERE rank < $2 OR (rank = $2 AND id > $3)"
            f" {order} LIMIT $4"
        ),
    )


# The read models with a ``search`` column (migration 0003).
PRODUCTS = _target(entities.PRODUCTS)
CUSTOMERS = _target(entities.CUSTOMERS)


@dataclass(frozen=True, slots=True)
class SearchPage:
    """Serialized documents, best match first; ``next`` is the last one's cursor when
    more hits follow."""

    items: list[bytes]
    next: SearchCursor | None


async def search_page(
    pool: asyncpg.Pool,
    target: SearchTarget,
    query: SearchQuery,
    size: int,
    after: SearchCursor | None,
) -> SearchPage:
    """Up to ``size`` hits of ``query`` in ``target``, strictly after ``after``."""
    if after is None:
        rows = await pool.fetch(target.first, query.tsquery, size + 1)
    else:
        rows = await pool.fetch(
            target.after, query.tsquery, after.rank, uuid.UUID(after.id), size + 1
        )
    more = len(rows) > size
    rows = rows[:size]
    items = [bytes(row["doc"]) for row in rows]
    last = rows[-1] if more else None
    return SearchPage(items, None if last is None else SearchCursor(last["rank"], str(last["id"])))
