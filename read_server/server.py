"""The read server: ``create_server`` (not started; port 0 works) and ``serve`` (the process)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis.exceptions

from common.errors import AppError, Unavailable
from common.outages import is_outage, sqlstate
from common.pb.shop.v1 import query_service_pb2 as qs
from common.rpc.limits import ServerLimits
from common.rpc.security import security_for
from common.rpc.server import BuiltServer, Service, build_server, serve_process
from common.settings import Settings
from read_server.bootstrap import App, bootstrap
from read_server.servicer import QueryServicer

SERVICE = qs.DESCRIPTOR.services_by_name["QueryService"]


def translate(exc: BaseException) -> AppError | None:
    """Name the store that is out: Redis (projections) or PostgreSQL (the other sources)."""
    if not is_outage(exc):
        return None
    if isinstance(exc, redis.exceptions.RedisError):
        return Unavailable(f"projection store (Redis) unavailable: {type(exc).__name__}")
    if sqlstate(exc) == "57014":
        return Unavailable("database query timed out")
    return Unavailable(f"database unavailable: {type(exc).__name__}")


def create_server(
    app: App, address: str, *, options: Sequence[tuple[str, Any]] = ()
) -> BuiltServer:
    """QueryService (+ health, reflection) for ``app``, bound to ``address``; not started."""
    servicer = QueryServicer(
        app.sources,
        app.settings.seconds.consistency_wait_max,
        app.reads,
        app.watching,
        app.parked,
    )
    return build_server(
        address,
        [Service(SERVICE, servicer)],
        translate=translate,
        options=options,
        security=security_for(app.settings, "read"),
        limits=ServerLimits.from_settings(app.settings),
    )


async def serve(settings: Settings) -> None:
    """Run the read server until SIGTERM/SIGINT."""
    await serve_process(
        settings,
        what=f"read server ({SERVICE.full_name})",
        host=settings.read_host,
        port=settings.read_port,
        metrics_port=settings.read_metrics_port,
        bootstrap=bootstrap,
        create=create_server,
    )
