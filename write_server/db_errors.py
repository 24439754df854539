"""Translate database driver errors into application errors (gRPC statuses)."""

from __future__ import annotations

import asyncpg
import sqlalchemy.exc

from common import errors

# SQLSTATE classes: 08 connection, 53 resources, 57P operator intervention (shutdown),
# 57014 statement timeout -> retry later; 40001/40P01/55P03 -> concurrency.
_UNAVAILABLE_PREFIXES = ("08", "53", "57P", "57014", "58")
_CONFLICT_CODES = ("40001", "40P01", "55P03")


def translate_db_error(exc: BaseException) -> errors.AppError | None:
    """An AppError for a database failure the client should see, else None."""
    if isinstance(exc, sqlalchemy.exc.TimeoutError):  # pool exhausted
        return errors.Unavailable("the database is busy; retry")
    original: BaseException = exc
    if isinstance(exc, sqlalchemy.exc.DBAPIError):
        if exc.connection_invalidated:
            return errors.Unavailable("lost the connection to the database; retry")
        if exc.orig is not None:
            original = exc.orig.__cause__ or exc.orig
    sqlstate = getattr(original, "sqlstate", None) or ""
    if sqlstate.startswith(_CONFLICT_CODES):
        return errors.ConcurrencyConflict("concurrent change; retry")
    if sqlstate.startswith(_UNAVAILABLE_PREFIXES):
        return errors.Unavailable("the database is unavailable; retry")
    if isinstance(
        original,
        OSError
        | ConnectionError
        | TimeoutError
        | asyncpg.InterfaceError
        | asyncpg.PostgresConnectionError,
    ):
        return errors.Unavailable("the database is unavailable; retry")
    if isinstance(exc, sqlalchemy.exc.InterfaceError | sqlalchemy.exc.OperationalError):
        return errors.Unavailable("the database is unavailable; retry")
    return None
