"""``read.projection_checkpoints``: every statement on a checkpoint row, in one place.

A row per PostgreSQL projection (and per rebuild's shadow copy, and per segment of a
split projection: ``pg:orders#1/4``, see :mod:`projector.segments`), updated in the same
transaction as the projection's rows. Positions are ``(xid, seq)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from common.positions import ORIGIN, Position
from common.projection_checkpoints import SEGMENT_SEPARATOR as SEPARATOR
from projector.errors import CheckpointMoved, RewindRefused, StoreLost

TABLE = "read.projection_checkpoints"


class Db(Protocol):
    async def fetchrow(self, query: str, *args: Any) -> Any: ...

    async def fetch(self, query: str, *args: Any) -> Any: ...

    async def execute(self, query: str, *args: Any) -> str: ...


async def read(db: Db, name: str) -> Position | None:
    """The checkpoint of ``name``, ``None`` if it has no row."""
    row = await db.fetchrow(f"SELECT xid, seq FROM {TABLE} WHERE projection = $1", name)
    return Position(row["xid"], row["seq"]) if row else None


async def lock(db: Db, name: str) -> Position | None:
    """Like :func:`read`, holding the row ``FOR UPDATE`` until the transaction ends."""
    row = await db.fetchrow(f"SELECT xid, seq FROM {TABLE} WHERE projection = $1 FOR UPDATE", name)
    return Position(row["xid"], row["seq"]) if row else None


async def advance(db: Db, name: str, expected: Position, new: Position) -> None:
    """Move ``name``'s checkpoint from ``expected`` to ``new``: a batch's compare-and-set,
    one statement that locks the row until the transaction ends (the first of a batch's
    transaction, so the row is locked before anything else, as :func:`lock` did; alone, a
    transaction of its own). ``StoreLost`` without a row, ``CheckpointMoved`` elsewhere;
    nothing changed then. A concurrent move of the row (a rewind, a switch) is waited for
    and then fails the comparison, as a ``FOR UPDATE`` read did."""
    row = await db.fetchrow(
        f"UPDATE {TABLE} SET xid = $4, seq = $5, updated_at = now() "
        "WHERE projection = $1 AND xid = $2 AND seq = $3 RETURNING 1",
        name,
        expected.xid,
        expected.seq,
        new.xid,
        new.seq,
    )
    if row is not None:
        return
    found = await read(db, name)
    if found is None:
        raise StoreLost(name, "has no checkpoint row", expected)
    raise CheckpointMoved(expected, found)


async def write(db: Db, name: str, position: Position) -> None:
    await db.execute(
        f"UPDATE {TABLE} SET xid = $2, seq = $3, updated_at = now() WHERE projection = $1",
        name,
        position.xid,
        position.seq,
    )


async def ensure(db: Db, name: str) -> None:
    """A row for ``name`` at the origin, unless it has one."""
    await db.execute(
        f"INSERT INTO {TABLE} (projection, xid, seq) VALUES ($1, $2, $3) "
        "ON CONFLICT (projection) DO NOTHING",
        name,
        ORIGIN.xid,
        ORIGIN.seq,
    )


async def read_or_start(db: Db, name: str) -> Position:
    """The checkpoint of ``name``; a missing row is created at the origin first (for the
    consumers that are never rebuilt, see :mod:`projector.outbound`)."""
    found = await read(db, name)
    if found is None:
        await ensure(db, name)
        found = await read(db, name)
        assert found is not None
    return found


async def reset(db: Db, name: str) -> None:
    """The row of ``name`` at the origin, whatever it held."""
    await db.execute(
        f"INSERT INTO {TABLE} (projection, xid, seq) VALUES ($1, $2, $3) ON CONFLICT "
        "(projection) DO UPDATE SET xid = EXCLUDED.xid, seq = EXCLUDED.seq, updated_at = now()",
        name,
        ORIGIN.xid,
        ORIGIN.seq,
    )


async def move_back(db: Db, name: str, to: Position) -> Position:
    """Move ``name``'s checkpoint back to ``to`` (a rewind, :mod:`projector.rewind`), inside
    the caller's transaction, which then holds the row until it ends: a runner's next
    compare-and-set fails (``CheckpointMoved``) and it goes on from ``to``. The checkpoint it
    stood at; :class:`RewindRefused` (nothing written) if ``to`` is ahead of it."""
    await ensure(db, name)  # never started: it stands at the origin
    found = await lock(db, name)
    assert found is not None
    if to > found:
        raise RewindRefused(
            f"{name}: {to.to_checkpoint()} is ahead of its checkpoint {found.to_checkpoint()} "
            "(a rewind never skips events)"
        )
    await write(db, name, to)
    return found


# The row ``<name>#rewound``: the highest checkpoint ``name`` was moved back from. Its
# ``#`` keeps it out of every list of live checkpoints (common.projection_checkpoints),
# like a segment's row; the NATS relay reads it (projector.relay.nats_relay).
REWOUND = f"{SEPARATOR}rewound"


async def record_rewound(db: Db, name: str, previous: Position) -> None:
    """Remember that ``name`` was moved back from ``previous`` (kept if higher already)."""
    await db.execute(
        f"INSERT INTO {TABLE} AS t (projection, xid, seq) VALUES ($1, $2, $3) "
        "ON CONFLICT (projection) DO UPDATE SET xid = EXCLUDED.xid, seq = EXCLUDED.seq, "
        "updated_at = now() WHERE (EXCLUDED.xid, EXCLUDED.seq) > (t.xid, t.seq)",
        name + REWOUND,
        previous.xid,
        previous.seq,
    )


async def rewound(db: Db, name: str) -> Position | None:
    """The highest checkpoint ``name`` was ever moved back from (``None``: never rewound)."""
    return await read(db, name + REWOUND)


async def delete(db: Db, name: str) -> None:
    await db.execute(f"DELETE FROM {TABLE} WHERE projection = $1", name)


# The rows of the segments of $1 (``pg:orders#1/4`` ..., projector.segments).
_SEGMENT_ROWS = f"left(projection, length($1::text) + 1) = $1::text || '{SEPARATOR}'"


async def segments(db: Db, name: str) -> set[str]:
    """The names of the segment rows of ``name`` (none: it is not split)."""
    rows = await db.fetch(f"SELECT projection FROM {TABLE} WHERE {_SEGMENT_ROWS}", name)
    return {r["projection"] for r in rows}


async def write_lowest(db: Db, name: str) -> None:
    """The row of ``name`` at the lowest of its segments' checkpoints (run while holding
    it: segments move forward only, so this does too)."""
    await db.execute(
        f"UPDATE {TABLE} SET (xid, seq, updated_at) = (SELECT xid, seq, now() FROM {TABLE} "
        f"WHERE {_SEGMENT_ROWS} ORDER BY xid, seq LIMIT 1) WHERE projection = $1",
        name,
    )


async def split(db: Db, name: str, names: Sequence[str], position: Position) -> None:
    """Replace the segment rows of ``name`` with ``names``, each at ``position`` (none:
    ``name`` is no longer split)."""
    await db.execute(f"DELETE FROM {TABLE} WHERE {_SEGMENT_ROWS}", name)
    for segment in names:
        await db.execute(
            f"INSERT INTO {TABLE} (projection, xid, seq) VALUES ($1, $2, $3)",
            segment,
            position.xid,
            position.seq,
        )
