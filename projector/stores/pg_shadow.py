"""Shadow read-model tables for rebuilds: create ``read.<table>__rebuild``, swap it in.

The swap happens inside the caller's transaction (which must already hold the
live checkpoint row ``FOR UPDATE``): drop the live table, rename the shadow to
the live name and rename its indexes to the live index names, so the schema
looks exactly as migrated. Readers waiting on the live table's lock resolve the
name again once the transaction commits and see the complete new table.
"""

from __future__ import annotations

import re

import asyncpg

# Re-exported: the stores name their copies with it.
from common.projection_checkpoints import SHADOW_SUFFIX as SHADOW_SUFFIX
from projector.stores import pg_checkpoints

_INDEXDEF = re.compile(r"^CREATE (UNIQUE )?INDEX \S+ ON (?:ONLY )?\S+ (.*)$")

_INDEXES = """
SELECT c.relname AS name, pg_get_indexdef(i.indexrelid) AS def
FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
WHERE i.indrelid = $1::regclass ORDER BY c.relname
"""


def shadow_table(table: str) -> str:
    """``product_read_model`` -> ``product_read_model__rebuild`` (schema ``read``)."""
    return table + SHADOW_SUFFIX


async def create_shadow(db: asyncpg.Pool, table: str, checkpoint_name: str) -> str:
    """(Re)create an empty shadow of ``read.<table>`` and its checkpoint row at the origin."""
    shadow = shadow_table(table)
    async with db.acquire() as conn, conn.transaction():
        await conn.execute(f"DROP TABLE IF EXISTS read.{shadow}")
        await conn.execute(f"CREATE TABLE read.{shadow} (LIKE read.{table} INCLUDING ALL)")
        await pg_checkpoints.reset(conn, checkpoint_name)
    return shadow


async def drop_shadow(db: asyncpg.Pool, table: str, checkpoint_name: str) -> None:
    """Remove a shadow table and its checkpoint row (an abandoned rebuild)."""
    async with db.acquire() as conn, conn.transaction():
        await conn.execute(f"DROP TABLE IF EXISTS read.{shadow_table(table)}")
        await pg_checkpoints.delete(conn, checkpoint_name)


async def swap_in_shadow(conn: asyncpg.Connection, table: str) -> None:
    """Replace ``read.<table>`` with its shadow, keeping table and index names.

    Runs in the caller's transaction.
    """
    shadow = shadow_table(table)
    renames = await _index_renames(conn, f"read.{table}", f"read.{shadow}")
    await conn.execute(f"DROP TABLE read.{table}")
    await conn.execute(f"ALTER TABLE read.{shadow} RENAME TO {table}")
    for shadow_index, live_index in renames:
        await conn.execute(f"ALTER INDEX read.{shadow_index} RENAME TO {live_index}")


async def _index_renames(conn: asyncpg.Connection, live: str, shadow: str) -> list[tuple[str, str]]:
    """Pairs (shadow index, live index) matched by definition (LIKE names them itself)."""
    live_rows = await conn.fetch(_INDEXES, live)
    by_shape: dict[str, list[str]] = {}
    for row in await conn.fetch(_INDEXES, shadow):
        by_shape.setdefault(_shape(row["def"]), []).append(row["name"])
    pairs: list[tuple[str, str]] = []
    for row in live_rows:
        candidates = by_shape.get(_shape(row["def"]))
        if not candidates:
            raise RuntimeError(f"{shadow} has no index like {row['def']}")
        pairs.append((candidates.pop(0), row["name"]))
    return pairs


def _shape(indexdef: str) -> str:
    m = _INDEXDEF.match(indexdef)
    if not m:
        raise RuntimeError(f"unexpected index definition: {indexdef}")
    return f"{m.group(1) or ''}{m.group(2)}"
