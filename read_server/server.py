"""The read server's gRPC server, built from already-open sources."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc
from grpc_health.v1 import health

from common import grpc_server
from common.settings import Settings
from read_server.handlers import add_query_service
from read_server.servicer import QueryServicer
from read_server.sources.base import SourceSet
from read_server.translate import translate


def create_server(
    settings: Settings,
    address: str,
    sources: SourceSet,
    *,
    options: Sequence[tuple[str, Any]] = (),
) -> tuple[grpc.aio.Server, int, health.aio.HealthServicer]:
    """QueryService (+ health, reflection, error mapping) bound to ``address``; not started.

    Returns ``(server, bound_port, health_servicer)``; port 0 in ``address`` picks a free one.
    """
    servicer = QueryServicer(sources, settings.consistency_wait_max_ms)

    def register(server: grpc.aio.Server) -> list[str]:
        return [add_query_service(server, servicer)]

    return grpc_server.create_server(address, register, translate=translate, options=options)
