"""What an outage is (common.outages) and what each server answers for one."""

from __future__ import annotations

import asyncpg
import pytest
import redis.exceptions
import sqlalchemy.exc

from common.errors import ConcurrencyConflict, Unavailable
from common.outages import is_contention, is_outage, is_transient
from read_server.server import translate as translate_read
from write_server.server import translate_db_error as translate_write


def wrapped(exc: BaseException) -> sqlalchemy.exc.DBAPIError:
    """``exc`` as SQLAlchemy's asyncpg dialect raises it: a DBAPI error caused by it."""
    adapted = Exception(str(exc))
    adapted.__cause__ = exc
    return sqlalchemy.exc.DBAPIError("SELECT 1", {}, adapted)


POSTGRES_OUTAGES = [
    asyncpg.exceptions.ConnectionDoesNotExistError("gone"),
    asyncpg.exceptions.ConnectionFailureError("08006"),  # SQLSTATE class 08
    asyncpg.exceptions.ClientCannotConnectError("08001"),
    asyncpg.exceptions.CannotConnectNowError("starting"),
    asyncpg.exceptions.AdminShutdownError("shutting down"),
    asyncpg.exceptions.TooManyConnectionsError("full"),
    asyncpg.exceptions.QueryCanceledError("statement timeout"),
    asyncpg.exceptions.InterfaceError("connection is closed"),
    # Seen when PostgreSQL was stopped under load (tests/faults/test_postgres_outage.py).
    asyncpg.exceptions.InternalClientError(
        "cannot switch to state 12; another operation (2) is in progress"
    ),
    ConnectionRefusedError(111, "refused"),
    TimeoutError(),
]
REDIS_OUTAGES = [
    redis.exceptions.ConnectionError("refused"),
    redis.exceptions.TimeoutError("slow"),
    redis.exceptions.BusyLoadingError("loading"),
    redis.exceptions.ResponseError("OOM command not allowed when used memory > 'maxmemory'"),
    # A cluster slot half moved by a reshard, past the client's retries; a cluster down.
    redis.exceptions.TryAgainError("TRYAGAIN Multiple keys request during rehashing of slot"),
    redis.exceptions.ClusterError("TTL exhausted."),
    redis.exceptions.ClusterDownError("CLUSTERDOWN The cluster is down"),
]
NOT_OUTAGES = [
    redis.exceptions.ResponseError("ERR bug in script"),
    asyncpg.exceptions.UndefinedTableError("no table"),
    asyncpg.exceptions.InterfaceError("cannot perform operation: another operation is in progress"),
    ValueError("bug"),
]


@pytest.mark.parametrize("exc", POSTGRES_OUTAGES + REDIS_OUTAGES, ids=repr)
def test_outages(exc: BaseException) -> None:
    assert is_outage(exc) and is_transient(exc) and not is_contention(exc)


@pytest.mark.parametrize("exc", NOT_OUTAGES, ids=repr)
def test_bugs_are_not_outages(exc: BaseException) -> None:
    assert not is_outage(exc) and not is_transient(exc)
    assert translate_write(exc) is None and translate_read(exc) is None


@pytest.mark.parametrize(
    "exc",
    [
        *POSTGRES_OUTAGES,
        *(wrapped(e) for e in POSTGRES_OUTAGES if isinstance(e, asyncpg.PostgresError)),
        sqlalchemy.exc.OperationalError(
            "SELECT 1", {}, Exception("terminated"), connection_invalidated=True
        ),
        sqlalchemy.exc.TimeoutError("QueuePool limit reached"),
    ],
    ids=repr,
)
def test_write_server_answers_unavailable_when_postgres_is_out(exc: BaseException) -> None:
    assert isinstance(translate_write(exc), Unavailable)


@pytest.mark.parametrize(
    "exc",
    [
        asyncpg.exceptions.ConnectionDoesNotExistError("closed in the middle of operation"),
        TimeoutError(),  # asyncpg's pool.acquire(timeout=...) waited in vain
    ],
    ids=repr,
)
def test_the_write_pool_losing_or_lacking_a_connection_is_unavailable(
    exc: BaseException,
) -> None:
    error = translate_write(exc)
    assert isinstance(error, Unavailable) and "unavailable" in error.message


@pytest.mark.parametrize(
    "exc",
    [
        asyncpg.exceptions.SerializationError("40001"),
        asyncpg.exceptions.DeadlockDetectedError("40P01"),
        wrapped(asyncpg.exceptions.LockNotAvailableError("55P03")),
    ],
    ids=repr,
)
def test_lost_contention_is_aborted_on_the_write_side(exc: BaseException) -> None:
    assert is_contention(exc) and is_transient(exc)
    assert isinstance(translate_write(exc), ConcurrencyConflict)


@pytest.mark.parametrize("exc", REDIS_OUTAGES, ids=repr)
def test_read_server_names_redis(exc: BaseException) -> None:
    error = translate_read(exc)
    assert isinstance(error, Unavailable) and "Redis" in error.message


@pytest.mark.parametrize("exc", POSTGRES_OUTAGES, ids=repr)
def test_read_server_names_the_database(exc: BaseException) -> None:
    error = translate_read(exc)
    assert isinstance(error, Unavailable) and "database" in error.message
