"""What counts as an outage of a backing service (PostgreSQL, Redis), whatever the library.

One definition for every process; each decides what to do about it: the servers
answer UNAVAILABLE, the projector backs off and retries. ``is_contention`` is the
other retryable kind: a concurrent transaction won (serialization failure,
deadlock, lock timeout), which the write side reports as ABORTED.
"""

from __future__ import annotations

import sys
from types import ModuleType

import asyncpg
import redis.exceptions

# SQLSTATE classes: 08 connection exception, 53 insufficient resources, 57P operator
# intervention (shutdown, cannot connect now), 57014 statement timeout, 58 system error.
_OUTAGE_SQLSTATES = ("08", "53", "57P", "57014", "58")
# 40001 serialization failure, 40P01 deadlock, 55P03 lock not available.
_CONTENTION_SQLSTATES = ("40001", "40P01", "55P03")
# A Redis that is full, busy with a script, loading its data set, or without a master.
_REDIS_BUSY_REPLIES = ("OOM", "BUSY", "LOADING", "MASTERDOWN")

_NETWORK: tuple[type[BaseException], ...] = (OSError, ConnectionError, TimeoutError)
_REDIS_OUTAGES: tuple[type[BaseException], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.BusyLoadingError,
    redis.exceptions.ReadOnlyError,
    redis.exceptions.TryAgainError,
    # A cluster that cannot serve the slot now: CLUSTERDOWN, or redirections and TRYAGAIN
    # replies that outlasted the client's retries (a slot half moved by a reshard).
    redis.exceptions.ClusterError,
)


def _sqlalchemy() -> ModuleType | None:
    """``sqlalchemy.exc`` if something imported it (the migrations do); otherwise no
    exception can be one of SQLAlchemy's, and the servers and the projector, which never
    use it, do not pay for importing it (a third of a second per process start)."""
    return sys.modules.get("sqlalchemy.exc")


def root_cause(exc: BaseException) -> BaseException:
    """The driver's own exception behind SQLAlchemy's wrappers (asyncpg's, for us)."""
    sa = _sqlalchemy()
    if sa is not None and isinstance(exc, sa.DBAPIError) and exc.orig is not None:
        cause: BaseException = exc.orig.__cause__ or exc.orig
        return cause
    return exc


def sqlstate(exc: BaseException) -> str:
    """The PostgreSQL SQLSTATE of ``exc`` (or of what SQLAlchemy wraps), else ``""``."""
    return str(getattr(root_cause(exc), "sqlstate", None) or "")


def is_outage(exc: BaseException) -> bool:
    """True when ``exc`` means PostgreSQL or Redis cannot be reached or cannot serve now."""
    sa = _sqlalchemy()
    if sa is not None:
        if isinstance(exc, sa.TimeoutError):  # the pool waited in vain
            return True
        if isinstance(exc, sa.DBAPIError) and exc.connection_invalidated:
            return True
        if isinstance(exc, sa.OperationalError):
            return True
    cause = root_cause(exc)
    if isinstance(cause, _NETWORK + _REDIS_OUTAGES):
        return True
    if sqlstate(cause).startswith(_OUTAGE_SQLSTATES):
        return True
    if isinstance(cause, asyncpg.InterfaceError):
        # Only a closed connection or pool; "another operation is in progress" is a bug.
        return "closed" in str(cause) or "closing" in str(cause)
    if isinstance(cause, asyncpg.exceptions.InternalClientError):
        # asyncpg's protocol state broken by a server that went away mid-statement ("cannot
        # switch to state 12; another operation is in progress", seen when PostgreSQL shuts
        # down under load); we never share a connection between statements in flight.
        return True
    return isinstance(cause, redis.exceptions.ResponseError) and str(cause).startswith(
        _REDIS_BUSY_REPLIES
    )


def is_contention(exc: BaseException) -> bool:
    """True when a concurrent transaction won and the same work may succeed if retried."""
    return sqlstate(exc).startswith(_CONTENTION_SQLSTATES)


def is_transient(exc: BaseException) -> bool:
    """Worth retrying as it is: an outage or lost contention."""
    return is_outage(exc) or is_contention(exc)
