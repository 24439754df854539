"""The write server: ``create_server`` (not started; port 0 works) and ``serve`` (the process)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from common import errors
from common.outages import is_contention, is_outage
from common.pb.shop.v1 import command_service_pb2 as pb
from common.rpc.limits import ServerLimits
from common.rpc.security import security_for
from common.rpc.server import BuiltServer, Service, build_server, serve_process
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
    internal = frozenset(s.strip() for s in app.settings.internal_subjects.split(",") if s.strip())
    security = security_for(app.settings, "write")
    # Callers are authenticated by a write token or a client certificate (mutual TLS).
    authenticates = security.guard is not None or bool(app.settings.tls_client_ca)
    servicer = CommandServicer(app.service, internal, authenticates=authenticates)
    return build_server(
        address,
        [Service(SERVICE, servicer)],
        translate=translate_db_error,
        options=options,
        security=security,
        limits=ServerLimits.from_settings(app.settings),
    )


async def serve(settings: Settings) -> None:
    """Run the write server until SIGTERM/SIGINT."""
    await serve_process(
        settings,
        what=f"write server ({SERVICE.full_name})",
        host=settings.write_host,
        port=settings.write_port,
        metrics_port=settings.write_metrics_port,
        bootstrap=bootstrap,
        create=create_server,
    )
