"""Which exceptions mean "a backing service is unavailable, retry" rather than "this event
cannot be applied" (which stops the projection: see :mod:`projector.runner`)."""

from __future__ import annotations

import asyncpg
from redis import exceptions as redis_errors

_TRANSIENT: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.AdminShutdownError,
    asyncpg.QueryCanceledError,  # statement_timeout
    asyncpg.LockNotAvailableError,
    asyncpg.DeadlockDetectedError,
    asyncpg.SerializationError,
    redis_errors.ConnectionError,
    redis_errors.TimeoutError,
    redis_errors.BusyLoadingError,
    redis_errors.ReadOnlyError,
    redis_errors.TryAgainError,
)


def is_transient(exc: BaseException) -> bool:
    """True for connection loss, timeouts, contention and a full Redis (OOM)."""
    if isinstance(exc, _TRANSIENT):
        return True
    return isinstance(exc, redis_errors.ResponseError) and str(exc).startswith(
        ("OOM", "BUSY", "LOADING", "MASTERDOWN")
    )
