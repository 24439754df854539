"""Where a scenario's CPU goes on this host: PostgreSQL's backends by application name (or
every session of one database, for the projector group's runs), and the projector's processes.

The writes are compared with ``pgbench`` (``bench/pg_limit.py``), which has the machine to
itself; what each command costs PostgreSQL, the server, the projector and the load
generator says whether a ratio to it is in reach on these cores at all. A backend is found
by its ``application_name`` in ``pg_stat_activity`` (every pool names its sessions:
``cqrs-write-server``, ``cqrs-projector``..., pgbench's are ``pgbench``) and its CPU read from
``/proc``: only where PostgreSQL runs on this host; elsewhere nothing is measured (None).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from pathlib import Path

import asyncpg

_TICKS_PER_S = os.sysconf("SC_CLK_TCK")
# The projector's processes: `cqrs projector run` and `python -m cqrs projector run`.
_PROJECTOR_ARGV = ("cqrs", "projector")

Snapshot = dict[int, float]  # pid -> CPU seconds so far


def pid_seconds(pid: int) -> float | None:
    """CPU seconds (user + system) process ``pid`` has spent, or None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name may hold spaces and parentheses: the fields follow the last ')'.
    fields = stat[stat.rfind(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS_PER_S


def spent(before: Mapping[int, float], after: Mapping[int, float]) -> float:
    """CPU seconds spent between two snapshots; a process new in ``after`` counts whole
    (it started in between)."""
    return sum(seconds - before.get(pid, 0.0) for pid, seconds in after.items())


def projector_processes() -> Snapshot:
    """The projector processes of this host and their CPU seconds."""
    found: Snapshot = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        words = [Path(a.decode(errors="replace")).name for a in argv]
        if any(tuple(words[i : i + 2]) == _PROJECTOR_ARGV for i in range(len(words) - 1)):
            seconds = pid_seconds(int(entry.name))
            if seconds is not None:
                found[int(entry.name)] = seconds
    return found


class Backends:
    """PostgreSQL's backends whose ``application_name`` starts with one of ``prefixes``."""

    def __init__(self, dsn: str, prefixes: tuple[str, ...]) -> None:
        self._dsn = dsn
        self._prefixes = prefixes

    def snapshot(self) -> Snapshot | None:
        """Their CPU seconds now, or None where a backend is not a process of this host (or
        PostgreSQL did not answer: a measuring aid never fails the scenario it measures)."""
        try:
            pids = asyncio.run(self._pids())
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):  # timeouts too
            return None
        found: Snapshot = {}
        for pid in pids:
            seconds = _backend_seconds(pid)
            if seconds is None:
                return None  # PostgreSQL runs elsewhere (or in a container of its own)
            found[pid] = seconds
        return found

    async def _pids(self) -> list[int]:
        conn = await asyncpg.connect(self._dsn, timeout=5)
        try:
            rows = await conn.fetch(
                "SELECT pid FROM pg_stat_activity "
                "WHERE application_name LIKE ANY($1::text[]) AND pid <> pg_backend_pid()",
                [f"{p}%" for p in self._prefixes],
            )
        finally:
            await conn.close()
        return [r["pid"] for r in rows]


class DatabaseSessions:
    """The CPU of the sessions of one database (but the reader's own), followed while
    they come and go over one run: each backend counts from its first reading (or from a
    reading before the run) to its last, so one that ends between readings loses only
    its last interval. ``seconds()`` is None where a backend is not a process of this
    host."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn
        self._before: Snapshot = {}
        self._last: Snapshot = {}
        self._here = True
        self._ignored: set[int] = set()

    def ignore(self, conn: asyncpg.Connection) -> None:
        """Leave the session of ``conn`` out (the measuring side's own)."""
        self._ignored.add(conn.get_server_pid())

    async def start(self) -> None:
        """Readings taken before the run: what these sessions spent earlier is not the
        run's."""
        await self.sample()
        self._before = dict(self._last)

    async def sample(self) -> None:
        """One more reading of every session of the database."""
        rows = await self._conn.fetch(
            "SELECT pid FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        rows = [r for r in rows if r["pid"] not in self._ignored]
        found = 0
        for row in rows:
            seconds = _backend_seconds(row["pid"])
            if seconds is not None:
                self._last[row["pid"]] = seconds
                found += 1
        # None of them a process here: PostgreSQL runs elsewhere (one backend may end
        # between the query and /proc, not all of them).
        self._here = self._here and (found > 0 or not rows)

    def seconds(self) -> float | None:
        """CPU seconds the sessions spent since ``start``."""
        return spent(self._before, self._last) if self._here else None


def _backend_seconds(pid: int) -> float | None:
    """CPU seconds of PostgreSQL backend ``pid``, or None where it is not a process of this
    host (gone, or a local process of another program under the same number)."""
    seconds = pid_seconds(pid)
    return seconds if seconds is not None and _name(pid) == "postgres" else None


def _name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


class Shares:
    """Over one RPC scenario: the CPU of the server's own PostgreSQL backends, and of the
    projector (its processes and their backends), per 1,000 calls."""

    def __init__(self, dsn: str, server_application: str) -> None:
        self._server = Backends(dsn, (server_application,))
        self._projector = Backends(dsn, ("cqrs-projector",))

    def snapshot(self) -> tuple[Snapshot | None, Snapshot | None, Snapshot]:
        """The server's backends, the projector's backends, the projector's processes."""
        return self._server.snapshot(), self._projector.snapshot(), projector_processes()

    @staticmethod
    def per_1000(
        before: tuple[Snapshot | None, Snapshot | None, Snapshot],
        after: tuple[Snapshot | None, Snapshot | None, Snapshot],
        calls: int,
    ) -> dict[str, float]:
        """The report's fields; none where PostgreSQL is not on this host."""
        server = _spent(before[0], after[0])
        projector = _spent(before[1], after[1])
        if not calls or server is None or projector is None:
            return {}
        projector += spent(before[2], after[2])
        return {
            "postgresCpuSecondsPer1000": server / calls * 1000,
            "projectorCpuSecondsPer1000": projector / calls * 1000,
        }


def _spent(before: Snapshot | None, after: Snapshot | None) -> float | None:
    return None if before is None or after is None else spent(before, after)
