"""The write server: ``create_server`` (not started; port 0 works) and ``serve`` (the process)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from common import errors
from common.metrics import start_metrics_server
from common.outages import is_contention, is_outage
from common.pb.shop.v1 import command_service_pb2 as pb
from common.rpc.security import security_for
from common.rpc.server import BuiltServer, Service, build_server, grpc_health, run_app
from common.settings import Settings
from write_server.bootstrap import App, bootstrap
from write_server.servicer import CommandServicer

SERVICE = pb.DESCRIPTOR.services_by_name["CommandService"]


def translate_db_error(exc: BaseException) -> errors.AppError | None:
    """A concurrent writer won: ABORTED (retry); PostgreSQL out: UNAVAILABLE."""
    if is_contention(exc):
        return errors.ConcurrencyConflict("concurrent change; retry")
    if is_outage(exc):
        return errors.Unavailable("the database is unavailable; retry")
    return None


def create_server(
    app: App, address: str, *, options: Sequence[tuple[str, Any]] = ()
) -> BuiltServer:
    """CommandService (+ health, reflection) for ``app``, bound to ``address``; not started."""
    servicer = CommandServicer(app.service)
    return build_server(
        address,
        [Service(SERVICE, servicer)],
        translate=translate_db_error,
        options=options,
        security=security_for(app.settings, "write"),
    )


async def serve(settings: Settings) -> None:
    """Run the write server until SIGTERM/SIGINT."""
    ops = start_metrics_server(settings.write_metrics_port, settings.metrics_host)
    app = await bootstrap(settings)
    built = create_server(app, f"{settings.write_host}:{settings.write_port}")
    if ops is not None:
        ops.health = grpc_health(built)
    try:
        await run_app(
            app,
            built,
            f"write server ({SERVICE.full_name})",
            settings.write_host,
            grace_seconds=settings.shutdown_grace_ms / 1000,
            drain_seconds=settings.shutdown_drain_ms / 1000,
        )
    finally:
        if ops is not None:
            ops.close()
