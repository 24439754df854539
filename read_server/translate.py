"""Maps Redis and PostgreSQL client failures to ``Unavailable`` for the error interceptor."""

from __future__ import annotations

import asyncpg
import redis.exceptions

from common.errors import AppError, Unavailable

_PG_UNAVAILABLE: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,  # SQLSTATE class 08, lost connections
    asyncpg.exceptions.OperatorInterventionError,  # class 57: shutdown, cannot connect now
    asyncpg.exceptions.InsufficientResourcesError,  # class 53: too many connections
)


def translate(exc: BaseException) -> AppError | None:
    """``Unavailable`` for a backing-store outage; ``None`` leaves ``exc`` to the defaults."""
    if isinstance(exc, redis.exceptions.ConnectionError | redis.exceptions.TimeoutError):
        return Unavailable(f"projection store (Redis) unavailable: {type(exc).__name__}")
    if isinstance(exc, asyncpg.exceptions.QueryCanceledError):
        return Unavailable("database query timed out")
    if isinstance(exc, _PG_UNAVAILABLE):
        return Unavailable(f"database unavailable: {type(exc).__name__}")
    return None
