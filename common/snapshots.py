"""Snapshots of aggregates for time travel (``read.snapshots``): the document after every
``CQRS_SNAPSHOT_EVERY``-th event of an aggregate.

Written by one consumer of the log (``pg:snapshots``, :mod:`projector.snapshots`), never by
the write path; read by ``Get*AsOf`` (:mod:`read_server.history.as_of`), which then replays
only the events after the snapshot. A snapshot holds the aggregate's own fold (an order
without its customer's later contact changes, which as-of applies afterwards), so it is
the same whatever instant it is used for: it is used when its version lies before the
as-of cut (the first event that occurred after the instant).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from common.event_log import AS_OF_CUTOFF

TABLE = "read.snapshots"

# The newest snapshot before the as-of cut ($1 id, $2 aggregate type, $3 the instant).
_BEFORE_CUT = f"""
SELECT s.aggregate_version, s.doc, s.occurred_at FROM {TABLE} s
WHERE s.aggregate_id = $1::uuid AND s.aggregate_type = $2::text
  AND s.aggregate_version < {AS_OF_CUTOFF}
ORDER BY s.aggregate_version DESC LIMIT 1
"""

# The newest snapshot below a version ($1 id, $2 version).
_BELOW = f"""
SELECT s.aggregate_version, s.doc, s.occurred_at FROM {TABLE} s
WHERE s.aggregate_id = $1::uuid AND s.aggregate_version < $2::bigint
ORDER BY s.aggregate_version DESC LIMIT 1
"""

# Idempotent: a batch applied again writes the same snapshot, which is kept once.
INSERT = f"""
INSERT INTO {TABLE} (aggregate_id, aggregate_version, aggregate_type, doc, occurred_at)
VALUES ($1::uuid, $2::bigint, $3::text, $4::bytea, $5::timestamptz)
ON CONFLICT (aggregate_id, aggregate_version) DO NOTHING
"""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The aggregate after its event ``version`` (``doc`` the serialized document, ``None``:
    that event deleted it, at ``occurred_at``)."""

    version: int
    doc: bytes | None
    occurred_at: datetime


async def before_cut(
    conn: asyncpg.Connection, aggregate_type: str, ident: str, at: datetime
) -> Snapshot | None:
    """The newest snapshot usable for the aggregate as of ``at``."""
    return _snapshot(await conn.fetchrow(_BEFORE_CUT, ident, aggregate_type, at))


async def below(conn: asyncpg.Connection, ident: str, version: int) -> Snapshot | None:
    """The newest snapshot of ``ident`` before its event ``version``."""
    return _snapshot(await conn.fetchrow(_BELOW, ident, version))


def _snapshot(row: asyncpg.Record | None) -> Snapshot | None:
    if row is None:
        return None
    doc = row["doc"]
    return Snapshot(
        row["aggregate_version"], bytes(doc) if doc is not None else None, row["occurred_at"]
    )
