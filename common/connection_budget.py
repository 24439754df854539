"""PostgreSQL connections: how many each process may hold, by pool, in one place.

The pools take their sizes from here and ``cqrs up`` prints the sum for what it starts, so
the figures cannot drift from the code. Every pool connects lazily or from one connection
and closes what stays idle for ``CQRS_DB_POOL_IDLE_MS``, so an idle system holds few; the
maximum is what a busy one may reach. PostgreSQL allows 100 by default, for everyone.

| process | pool / session | at most |
| --- | --- | --- |
| write server (each worker) | pool | ``2 x CQRS_DB_POOL_SIZE`` |
| read server (each worker) | pool | ``CQRS_DB_POOL_SIZE`` |
| projector (each process) | pool | ``max(CQRS_DB_POOL_SIZE, 2)`` |
| projector (each process) | sessions: leases (all of them), membership, LISTEN | 3 |
"""

from __future__ import annotations

from dataclasses import dataclass

from common.settings import Settings

# The projector's sessions beside its pool: one holding every lease and rebuild lock of the
# process (projector.leadership.LeaseSession), the membership's, the LISTEN connection.
PROJECTOR_SESSIONS = 3


def write_pool_max(settings: Settings) -> int:
    """A write server's pool (commands hold a connection for their transaction)."""
    return settings.db_pool_size * 2


def read_pool_max(settings: Settings) -> int:
    return settings.db_pool_size


def projector_pool_max(settings: Settings) -> int:
    return max(settings.db_pool_size, 2)


def pool_options(settings: Settings) -> dict[str, float | int]:
    """What every pool shares: idle connections beyond the minimum are closed; the
    prepared-statement cache (0 behind PgBouncer < 1.21 in transaction mode)."""
    return {
        "max_inactive_connection_lifetime": settings.seconds.db_pool_idle,
        "statement_cache_size": settings.db_statement_cache_size,
    }


@dataclass(frozen=True, slots=True)
class Line:
    """One kind of process in a budget."""

    process: str
    count: int  # processes of the kind
    each: int  # connections each may hold

    @property
    def total(self) -> int:
        return self.count * self.each


def budget(settings: Settings, *, write: int, read: int, projectors: int) -> list[Line]:
    """The connections ``write`` write-server, ``read`` read-server and ``projectors``
    projector processes may hold at most."""
    lines = [
        Line("write server", write, write_pool_max(settings)),
        Line("read server", read, read_pool_max(settings)),
        Line("projector", projectors, projector_pool_max(settings) + PROJECTOR_SESSIONS),
    ]
    return [line for line in lines if line.count]


def describe(lines: list[Line]) -> str:
    """``write server 1 x 20 + read server 1 x 10 + projector 1 x 13 = 43``."""
    parts = " + ".join(f"{line.process} {line.count} x {line.each}" for line in lines)
    return f"{parts} = {sum(line.total for line in lines)}"
