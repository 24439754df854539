"""The write server: ``create_server`` (testable, port 0 works) and ``serve`` (the process)."""

from __future__ import annotations

import logging

import grpc
from grpc_health.v1 import health

from common.grpc_server import create_server as create_grpc_server
from common.grpc_server import mark_serving, serve_until_signalled
from common.metrics import start_metrics_server
from common.pb.shop.v1 import command_service_pb2 as pb
from common.pb.shop.v1 import command_service_pb2_grpc as pb_grpc
from common.settings import Settings
from write_server.bootstrap import WriteApp, bootstrap
from write_server.db_errors import translate_db_error
from write_server.servicer import CommandServicer

log = logging.getLogger(__name__)
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["CommandService"].full_name


async def create_server(
    app: WriteApp, address: str
) -> tuple[grpc.aio.Server, int, health.aio.HealthServicer]:
    """A started server for ``app`` on ``address``; returns it with its bound port."""

    def register(server: grpc.aio.Server) -> list[str]:
        pb_grpc.add_CommandServiceServicer_to_server(CommandServicer(app.service), server)
        return [SERVICE_NAME]

    server, port, health_servicer = create_grpc_server(
        address, register, translate=translate_db_error
    )
    await server.start()
    await mark_serving(health_servicer, [SERVICE_NAME])
    return server, port, health_servicer


async def serve(settings: Settings) -> None:
    """Run the write server until SIGTERM/SIGINT."""
    app = bootstrap(settings)
    start_metrics_server(settings.write_metrics_port)
    server, port, health_servicer = await create_server(
        app, f"{settings.write_host}:{settings.write_port}"
    )
    log.info("write server (shop.v1.CommandService) listening on %s:%d", settings.write_host, port)
    await serve_until_signalled(server, health_servicer, on_stop=app.close)
