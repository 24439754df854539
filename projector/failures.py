"""``read.projection_failures``: the record of projections stopped on a poison event."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

_TABLE = "read.projection_failures"
_MAX_ERROR = 4000


@dataclass(frozen=True, slots=True)
class Failure:
    """Why a projection stopped."""

    projection: str
    event_seq: int
    event_type: str
    error: str
    failed_at: datetime


class FailureLog:
    """Records, reads and clears poison-event failures (one row per projection)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def record(self, projection: str, event_seq: int, event_type: str, error: str) -> None:
        """Insert or replace the projection's failure row."""
        await self._pool.execute(
            f"INSERT INTO {_TABLE} (projection, event_seq, event_type, error, failed_at) "
            "VALUES ($1, $2, $3, $4, now()) ON CONFLICT (projection) DO UPDATE SET "
            "event_seq = EXCLUDED.event_seq, event_type = EXCLUDED.event_type, "
            "error = EXCLUDED.error, failed_at = EXCLUDED.failed_at",
            projection,
            event_seq,
            event_type,
            error[:_MAX_ERROR],
        )

    async def clear(self, projection: str) -> bool:
        """Delete the projection's failure row; True if there was one."""
        status = await self._pool.execute(f"DELETE FROM {_TABLE} WHERE projection = $1", projection)
        return bool(status != "DELETE 0")

    async def get(self, projection: str) -> Failure | None:
        row = await self._pool.fetchrow(f"SELECT * FROM {_TABLE} WHERE projection = $1", projection)
        return _failure(row) if row else None

    async def all(self) -> dict[str, Failure]:
        rows = await self._pool.fetch(f"SELECT * FROM {_TABLE} ORDER BY projection")
        return {r["projection"]: _failure(r) for r in rows}


def _failure(row: asyncpg.Record) -> Failure:
    return Failure(
        row["projection"], row["event_seq"], row["event_type"], row["error"], row["failed_at"]
    )
