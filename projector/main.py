"""Entry points called by ``cqrs projector run|rebuild|verify|status`` (see cqrs/cli.py)."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Sequence

from common import runtime
from common.metrics import start_metrics_server
from common.positions import Position
from common.redis_client import redis_client
from common.settings import Settings
from projector import parked_commands, redis_prune
from projector import rebuild as rebuilding
from projector import rewind as rewinding
from projector import status as statusing
from projector import verify as verifying
from projector.audit_record import AuditRecord
from projector.bootstrap import open_app
from projector.health import ProjectorHealth
from projector.parking import ParkedBook
from projector.runner import Outcome
from projector.segments import base_name
from projector.stores import pg_checkpoints

log = logging.getLogger(__name__)


async def run(settings: Settings, only: list[str] | None = None) -> int:
    """Run every consumer (or those named in ``only``) until SIGTERM/SIGINT.

    On the signal ``/healthz`` turns 503 ("stopping"), every runner finishes (commits)
    its current batch and releases its lease, so a standby takes over at once; after
    ``shutdown_grace_ms`` what still runs is cancelled (its transaction rolls back).
    Returns the exit status: 0 after a signal, 1 when every consumer stopped on a
    poison event (so a supervisor sees the failure).
    """
    ops = start_metrics_server(settings.projector_metrics_port, settings.metrics_host)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with open_app(settings) as app:
            runtime.collect_less()
            projector = app.projector(only)
            if ops is not None:
                health = ProjectorHealth(
                    loop, app.pool, projector.runners, stop, projector.services
                )
                ops.health, ops.live = health.readiness, health.liveness
            task = asyncio.create_task(projector.run(stop))
            stopping = asyncio.create_task(stop.wait())
            await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            if not task.done():
                grace = settings.seconds.shutdown_grace
                log.info(
                    "stopping: current batches finish, leases are released (grace %.1fs)", grace
                )
                _, pending = await asyncio.wait({task}, timeout=grace)
                if pending:
                    log.warning("stopping: still busy after %.1fs; cancelling", grace)
                    task.cancel()
            outcomes = (await asyncio.gather(task, return_exceptions=True))[0]
            if stop.is_set():
                log.info("stopped; every lease released")
            if isinstance(outcomes, dict) and not stop.is_set():
                failed = [name for name, o in outcomes.items() if o is Outcome.FAILED]
                log.error("every projection stopped on a failure: %s", ", ".join(failed))
                return 1
            return 0
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        if ops is not None:
            ops.close()


async def rebuild(settings: Settings, only: list[str] | None, metrics_port: int = 0) -> int:
    """Rebuild the consumers of the families in ``only`` (default: all); with a
    ``metrics_port``, ``/metrics`` shows the rebuild gauges meanwhile (the running
    projector has its own port)."""
    ops = start_metrics_server(metrics_port, settings.metrics_host)
    try:
        async with open_app(settings) as app:
            runtime.collect_less()
            try:
                chosen = app.rebuilt_as(app.select(only))
            except ValueError as exc:
                print(f"cqrs projector rebuild: {exc}", file=sys.stderr)
                return 2
            return await rebuilding.rebuild(
                chosen,
                app.pool,
                dsn=settings.asyncpg_dsn,
                batch_size=settings.projector_batch_size,
                parking=app.parking,
            )
    finally:
        if ops is not None:
            ops.close()


async def parked(settings: Settings) -> int:
    """``cqrs projector parked``: every parked aggregate; 1 if there is any."""
    async with open_app(settings) as app:
        return await parked_commands.parked(ParkedBook(app.pool))


async def prune_redis(settings: Settings, delete: bool) -> int:
    """``cqrs projector prune-redis``: the Redis keyspaces no configured projection uses,
    deleted with ``delete`` (:mod:`projector.redis_prune`)."""
    client = redis_client(settings.redis_url, max_connections=4)
    try:
        return await redis_prune.prune(client, settings, delete, sys.stdout)
    finally:
        await client.aclose()


async def unpark(settings: Settings, consumer: str, aggregate_id: str | None, wait_s: float) -> int:
    """``cqrs projector unpark``: ask the running projector to replay parked aggregates."""
    async with open_app(settings) as app:
        try:
            app.consumer(consumer)
        except ValueError as exc:
            print(f"cqrs projector unpark: {exc}", file=sys.stderr)
            return 2
        book = ParkedBook(app.pool)
        return await parked_commands.unpark(book, consumer, aggregate_id, wait_s=wait_s)


async def rewind(settings: Settings, names: Sequence[str], position: Position) -> int:
    """``cqrs projector rebuild --from POSITION --consumer NAME ...``: rewind each consumer
    named to ``position`` (:mod:`projector.rewind`); 2 when one is refused (nothing changed),
    1 when another rebuild or rewind of one is running."""
    async with open_app(settings) as app:
        configured = set(app.names())
        for name in names:
            # Known to the database but not to this shell (its settings are not set here).
            unknown = name not in configured and base_name(name) == name
            if unknown and await pg_checkpoints.read(app.pool, name) is not None:
                print(
                    f"cqrs projector rebuild: {name} is not configured in this shell (set the "
                    "settings the projector runs it with, e.g. CQRS_NATS_URL for nats:events)",
                    file=sys.stderr,
                )
                return 2
        return await rewinding.rewind(
            app.consumers, names, position, app.pool, dsn=settings.asyncpg_dsn
        )


async def verify(settings: Settings) -> int:
    """0 when every projection equals the write model, 1 when any differs (the printed
    report counts the differences)."""
    async with open_app(settings) as app:
        differences = await verifying.verify(app.consumers, app.pool)
    return 1 if differences else 0


async def status(settings: Settings) -> int:
    """Print checkpoints, lag and failures; 1 if a projection is stopped on a failure."""
    async with open_app(settings) as app:
        audits = AuditRecord(app.redis, settings.redis_prefix)
        return await statusing.status(
            app.consumers, app.pool, app.failures, audits=audits, parked=ParkedBook(app.pool)
        )
