"""Projector throughput: catch-up from zero (each projection, the analytics consumer
``pg:analytics``, the Redis ones, all six, all seven), ``cqrs projector rebuild``, and
the projector's peak RSS.

It works on a scratch database holding a copy of the event log (streamed with COPY,
so the system under test may keep running) and a fresh Redis key prefix per run;
each run is a real ``cqrs projector run`` (or ``rebuild``) process, timed from its
start until every selected projection's checkpoint covers the log's head. Throughput
is the log's events (those the projections read) per second of that wall time,
process start-up included. Beside it, the CPU each event cost the projector's processes
and their PostgreSQL sessions: what the cores give decides which rates are in reach.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import resource
import signal
import sys
import time
import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg

from bench import process_cpu
from bench.catalogue import ROOT
from common.db import drop_database, migrate, split_database
from common.events import CUSTOMER, ORDER, PRODUCT
from common.positions import Position
from common.projection_checkpoints import RedisCheckpoints, spread_of
from common.redis_client import redis_client
from common.settings import Settings, to_environ

# Which aggregate types each consumer reads (projector/projections.py, projector/analytics).
CONSUMES = {
    "products": (PRODUCT,),
    "customers": (CUSTOMER,),
    "orders": (ORDER, CUSTOMER),
    "analytics": (PRODUCT, CUSTOMER, ORDER),
}
PROJECTIONS = [f"{b}:{k}" for b in ("redis", "pg") for k in ("products", "customers", "orders")]
ANALYTICS = "pg:analytics"
RUNS: dict[str, list[str]] = {
    **{name: [name] for name in PROJECTIONS},
    ANALYTICS: [ANALYTICS],
    "redis (3)": [p for p in PROJECTIONS if p.startswith("redis:")],
    "all six": PROJECTIONS,
    "all seven": [*PROJECTIONS, ANALYTICS],
    "all seven, 2 processes": [*PROJECTIONS, ANALYTICS],
    "all seven, following": [*PROJECTIONS, ANALYTICS],
    "all seven, following, 2 processes, 2 segments": [*PROJECTIONS, ANALYTICS],
}
# Runs by several `cqrs projector run` processes sharing the consumers (fair share).
PROCESSES = {"all seven, 2 processes": 2, "all seven, following, 2 processes, 2 segments": 2}
# Runs that follow the log from built (empty) copies at the origin instead of building
# them (a catch-up from zero is a rebuild: one copy per consumer, built whole), as a
# projector does after a long stop; with the projections split (projector.segments).
FOLLOWING = {"all seven, following": "", "all seven, following, 2 processes, 2 segments": "*=2"}
# The runs with the analytics consumer (the analytics group's projector scenario).
ANALYTICS_RUNS = [ANALYTICS, "all seven"]
_POLL_S = 0.05
_TIMEOUT_S = 600.0


@dataclass(frozen=True, slots=True)
class Result:
    run: str
    events: int  # log events read by the projections of the run
    seconds: float
    peak_rss_mb: float
    projector_cpu_s: float  # the run's projector processes, start-up included
    postgres_cpu_s: float | None  # their PostgreSQL sessions (None: not on this host)

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0

    def us_per_event(self, cpu_s: float | None) -> float | None:
        """``cpu_s`` spread over the run's events, in microseconds."""
        return None if cpu_s is None or not self.events else cpu_s / self.events * 1e6


async def measure(
    settings: Settings, runs: list[str] | None = None, rebuild: bool = True
) -> dict[str, Any]:
    """Every catch-up run of ``runs`` (default: all), then (if ``rebuild``) a rebuild of
    everything; ``rebuild`` is None in the result without one."""
    scratch = await scratch_copy(settings)
    rebuilt: Result | None = None
    try:
        head, counts = await _log(scratch.asyncpg_dsn)
        results = []
        for name in runs or list(RUNS):
            projections = RUNS[name]
            seconds, rss, cpu = await _catch_up(
                scratch, projections, head, PROCESSES.get(name, 1), FOLLOWING.get(name)
            )
            results.append(Result(name, events_read(counts, projections), seconds, rss, *cpu))
            _say(f"  catch-up {name}: {results[-1].events_per_s:,.0f} events/s")
        if rebuild:
            rebuilt = await _rebuild(scratch, sum(counts.values()))
            _say(f"  rebuild: {rebuilt.events_per_s:,.0f} events/s")
    finally:
        await drop_database(scratch.asyncpg_dsn)
    return {
        "log_events": sum(counts.values()),
        "catch_up": [_as_dict(r) for r in results],
        "rebuild": _as_dict(rebuilt) if rebuilt else None,
    }


def _as_dict(result: Result) -> dict[str, Any]:
    return {
        **dataclasses.asdict(result),
        "events_per_s": result.events_per_s,
        "projector_cpu_us_per_event": result.us_per_event(result.projector_cpu_s),
        "postgres_cpu_us_per_event": result.us_per_event(result.postgres_cpu_s),
    }


def events_read(counts: dict[str, int], projections: list[str]) -> int:
    """How many log events ``projections`` read between them (each event once)."""
    types = {t for p in projections for t in CONSUMES[p.split(":")[1]]}
    return sum(n for t, n in counts.items() if t in types)


async def scratch_copy(settings: Settings, suffix: str = "_bench_projector") -> Settings:
    """A migrated scratch database holding a copy of the event log (named the database's
    name + ``suffix``)."""
    _, name = split_database(settings.asyncpg_dsn)
    scratch_name = f"{name}{suffix}"
    base = settings.database_url.rsplit("/", 1)[0]
    scratch = dataclasses.replace(settings, database_url=f"{base}/{scratch_name}")
    await drop_database(scratch.asyncpg_dsn)
    await migrate(scratch.asyncpg_dsn, scratch.sqlalchemy_url)
    source = await asyncpg.connect(settings.asyncpg_dsn)
    target = await asyncpg.connect(scratch.asyncpg_dsn)
    try:
        columns = "seq, xid, aggregate_type, aggregate_id, aggregate_version, event_type, " \
            "schema_version, payload, metadata, occurred_at"  # fmt: skip
        reader, writer = os.pipe()
        copy_out = source.copy_from_query(
            f"SELECT {columns} FROM events ORDER BY seq", output=_Writer(writer), format="binary"
        )
        copy_in = target.copy_to_table(
            "events", source=_Reader(reader), columns=columns.split(", "), format="binary"
        )
        await asyncio.gather(copy_out, copy_in)
        # Statistics, as a live log has them (autovacuum): without them the planner reads
        # each batch by sorting every later event (a bitmap scan estimated at a few rows),
        # 1 ms per 500-event read turning into 100 ms on 55k events.
        await target.execute("ANALYZE events")
    finally:
        await source.close()
        await target.close()
    return scratch


class _Writer:
    """An async sink writing COPY data into a pipe (closed at the end)."""

    def __init__(self, fd: int) -> None:
        self._file = os.fdopen(fd, "wb", buffering=0)

    async def __call__(self, data: bytes) -> None:
        await asyncio.to_thread(self._file.write, data)
        if not data:
            self._file.close()


class _Reader:
    """An async iterator reading COPY data from a pipe."""

    def __init__(self, fd: int) -> None:
        self._file = os.fdopen(fd, "rb", buffering=0)

    def __aiter__(self) -> _Reader:
        return self

    async def __anext__(self) -> bytes:
        chunk = await asyncio.to_thread(self._file.read, 1 << 16)
        if not chunk:
            self._file.close()
            raise StopAsyncIteration
        return bytes(chunk)


async def log_head(conn: asyncpg.Connection) -> Position | None:
    """The position of the log's last event (``None``: the log is empty)."""
    row = await conn.fetchrow(
        "SELECT xid::text::bigint AS xid, seq FROM events ORDER BY xid DESC, seq DESC LIMIT 1"
    )
    return Position(row["xid"], row["seq"]) if row else None


async def _log(dsn: str) -> tuple[Position, dict[str, int]]:
    conn = await asyncpg.connect(dsn)
    try:
        head = await log_head(conn)
        counts = {
            r["aggregate_type"]: r["n"]
            for r in await conn.fetch("SELECT aggregate_type, count(*) AS n FROM events GROUP BY 1")
        }
    finally:
        await conn.close()
    if head is None:
        raise RuntimeError("the event log is empty: seed first")
    return head, counts


def _env(settings: Settings) -> dict[str, str]:
    return {
        **os.environ,
        **to_environ(settings),
        "CQRS_PROJECTOR_METRICS_PORT": "0",
        "CQRS_LOG_LEVEL": "WARNING",
        "PYTHONPATH": str(ROOT),
    }


async def _catch_up(
    scratch: Settings,
    projections: list[str],
    head: Position,
    processes: int = 1,
    following: str | None = None,
) -> tuple[float, float, tuple[float, float | None]]:
    """Seconds until ``projections`` cover ``head`` from zero (run by ``processes``
    projector processes sharing them), the peak RSS (MB) of the largest, and the CPU
    seconds of the processes and of their PostgreSQL sessions. ``following``: from empty
    copies at the origin, split as it says (``CQRS_PROJECTOR_SEGMENTS``)."""
    settings = dataclasses.replace(
        scratch, redis_prefix=f"bench{uuid.uuid4().hex[:8]}", projector_segments=following or ""
    )
    await _reset_read_models(settings)
    if following is not None:
        await _empty_at_origin(settings, projections)
    argv = ["projector", "run"]
    for projection in projections:
        argv += ["--only", projection]
    cpu = await _Cpu.start(settings)
    started = [await _Process.start(argv, settings) for _ in range(processes)]
    try:
        await _until_caught_up(settings, projections, head, started, cpu)
    finally:
        seconds = started[0].elapsed()
        for process in started:
            await process.stop()
        spent = await cpu.finish()
    await _drop_redis_prefix(settings)
    return seconds, max(p.peak_rss_mb for p in started), spent


async def _empty_at_origin(settings: Settings, projections: list[str]) -> None:
    """Each of ``projections`` built empty at the origin (an empty copy switched in)."""
    from projector.bootstrap import open_app

    async def as_it_is(copy: Any, db: Any) -> Position:
        return await copy.checkpoint()  # type: ignore[no-any-return]

    async with open_app(settings) as app:
        for name in projections:
            consumer = app.consumer(name)
            await consumer.switch_to(await consumer.new_copy(), as_it_is)


async def _rebuild(scratch: Settings, events: int) -> Result:
    """``cqrs projector rebuild`` of everything on the scratch copy (each projection replays
    the events it reads; throughput counts the log's events once, like the catch-up)."""
    settings = dataclasses.replace(scratch, redis_prefix=f"bench{uuid.uuid4().hex[:8]}")
    cpu = await _Cpu.start(settings)
    process = await _Process.start(["projector", "rebuild"], settings)
    try:
        code = await process.finish(cpu)
    finally:
        spent = await cpu.finish()
    await _drop_redis_prefix(settings)
    if code != 0:
        raise RuntimeError(f"rebuild failed with exit code {code}")
    return Result("rebuild (all seven)", events, process.elapsed(), process.peak_rss_mb, *spent)


class _Cpu:
    """The CPU one run's projector processes (this process's children, once waited for)
    and their PostgreSQL sessions (read while the run lasts) spend."""

    def __init__(self, conn: asyncpg.Connection, children: float) -> None:
        self._conn = conn
        self._children = children
        self._sessions = process_cpu.DatabaseSessions(conn)

    @classmethod
    async def start(cls, settings: Settings) -> _Cpu:
        cpu = cls(await asyncpg.connect(settings.asyncpg_dsn), _children_seconds())
        await cpu._sessions.start()
        return cpu

    def ignore(self, conn: asyncpg.Connection) -> None:
        """The bench's own connection to the run's database: not the projector's."""
        self._sessions.ignore(conn)

    async def sample(self) -> None:
        await self._sessions.sample()

    async def finish(self) -> tuple[float, float | None]:
        """The processes' CPU seconds (call it after they ended) and their sessions'."""
        await self._conn.close()
        return _children_seconds() - self._children, self._sessions.seconds()


def _children_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class _Process:
    """A ``cqrs`` child process, timed from its start, its peak RSS sampled from /proc."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self._process = process
        self._started = time.monotonic()
        self._ended: float | None = None
        self.peak_rss_mb = 0.0

    @classmethod
    async def start(cls, args: list[str], settings: Settings) -> _Process:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "cqrs", *args, env=_env(settings), cwd=ROOT,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        return cls(process)

    @property
    def returncode(self) -> int | None:
        return self._process.returncode

    def elapsed(self) -> float:
        return (self._ended or time.monotonic()) - self._started

    def sample(self) -> None:
        """Note the process's high-water mark of resident memory (VmHWM)."""
        try:
            with open(f"/proc/{self._process.pid}/status") as status:
                for line in status:
                    if line.startswith("VmHWM:"):
                        self.peak_rss_mb = max(self.peak_rss_mb, int(line.split()[1]) / 1024)
        except OSError:
            pass  # it has exited

    async def finish(self, cpu: _Cpu) -> int:
        """Wait for it to exit by itself, sampling its memory and ``cpu``; its exit code."""
        while self._process.returncode is None:
            self.sample()
            await cpu.sample()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_POLL_S):
                    await self._process.wait()
        self._ended = self._ended or time.monotonic()
        return self._process.returncode

    async def stop(self) -> None:
        self.sample()
        self._ended = self._ended or time.monotonic()
        if self._process.returncode is None:
            self._process.send_signal(signal.SIGTERM)
        await self._process.wait()


async def _until_caught_up(
    settings: Settings,
    projections: list[str],
    head: Position,
    processes: list[_Process],
    cpu: _Cpu,
) -> None:
    redis = redis_client(settings.redis_url, max_connections=2)
    db = await asyncpg.connect(settings.asyncpg_dsn)
    cpu.ignore(db)
    deadline = time.monotonic() + _TIMEOUT_S
    try:
        in_redis = RedisCheckpoints(redis, settings.redis_prefix, shards=spread_of(settings))
        while True:
            for process in processes:
                process.sample()
                if process.returncode is not None:
                    raise RuntimeError(f"the projector exited with {process.returncode}")
            await cpu.sample()
            positions = [await _checkpoint(p, in_redis, db) for p in projections]
            if all(p is not None and p >= head for p in positions):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{projections} did not catch up in {_TIMEOUT_S:.0f} s")
            await asyncio.sleep(_POLL_S)
    finally:
        await redis.aclose()
        await db.close()


async def _checkpoint(
    projection: str, in_redis: RedisCheckpoints, db: asyncpg.Connection
) -> Position | None:
    if projection.startswith("pg:"):
        row = await db.fetchrow(
            "SELECT xid, seq FROM read.projection_checkpoints WHERE projection = $1", projection
        )
        return Position(row["xid"], row["seq"]) if row else None
    return await in_redis.checkpoint(projection)


async def _reset_read_models(settings: Settings) -> None:
    conn = await asyncpg.connect(settings.asyncpg_dsn)
    try:
        await conn.execute(
            "TRUNCATE read.product_read_model, read.customer_read_model, read.order_read_model;"
            "DELETE FROM read.projection_checkpoints"
        )
    finally:
        await conn.close()


async def _drop_redis_prefix(settings: Settings) -> None:
    redis = redis_client(settings.redis_url, max_connections=2)
    try:
        batch = [key async for key in redis.scan_iter(match=f"{settings.redis_prefix}:*")]
        for start in range(0, len(batch), 500):
            await redis.unlink(*batch[start : start + 500])
    finally:
        await redis.aclose()


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)
