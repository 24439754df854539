"""``cqrs read-server``: serve QueryService until SIGTERM/SIGINT."""

from __future__ import annotations

import logging

from common.grpc_server import mark_serving, serve_until_signalled
from common.metrics import start_metrics_server
from common.settings import Settings
from read_server.bootstrap import open_resources
from read_server.handlers import SERVICE_NAME
from read_server.server import create_server

log = logging.getLogger(__name__)


async def serve(settings: Settings) -> None:
    """Open the pools, serve on ``read_host:read_port``, drain and close on a signal."""
    start_metrics_server(settings.read_metrics_port)
    resources = await open_resources(settings)
    try:
        server, port, health = create_server(
            settings, f"{settings.read_host}:{settings.read_port}", resources.sources
        )
        await server.start()
        await mark_serving(health, [SERVICE_NAME])
        log.info("read server listening on %s:%d", settings.read_host, port)
        await serve_until_signalled(server, health, on_stop=resources.close)
    finally:
        await resources.close()
