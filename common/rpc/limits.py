"""What one client may hold on a gRPC server, as grpc core options and our own caps.

Both servers get the same limits from :class:`Settings` (``CQRS_GRPC_*``,
``CQRS_HEALTH_WATCH_MAX``), through :func:`common.rpc.server.build_server`:

- concurrent streams per connection (``grpc.max_concurrent_streams``): a client's
  further calls queue on its side, they never hold the server;
- connections per process (``grpc.max_allowed_incoming_connections``): one more is
  closed at once, so descriptors never run out for the pools and the ones who are in;
  lowered to what the process's descriptor limit leaves (:func:`connection_cap`);
- a connection that sends nothing HTTP/2 within the handshake time is closed
  (``grpc.server_handshake_timeout_ms``), so are connections idle (no call) for the
  idle time (``grpc.max_connection_idle_ms``) and connections older than the age
  (``grpc.max_connection_age_ms``, with ``grpc.max_connection_age_grace_ms`` for the
  calls still on them): a client reconnects transparently, an idle crowd goes away;
- health ``Watch`` streams per process (:class:`common.rpc.health.HealthServicer`).
"""

from __future__ import annotations

import logging
import resource
from dataclasses import dataclass

from common.settings import Settings

log = logging.getLogger(__name__)

# Descriptors kept for everything else a server process opens: database and Redis
# pools, the change feed, the ops endpoint, logs, the listener, grpc's own pipes.
RESERVED_DESCRIPTORS = 256


@dataclass(frozen=True, slots=True)
class ServerLimits:
    """Limits of one server process; 0 turns a limit off (grpc's own default), except
    connections, which the descriptor limit always caps."""

    max_streams_per_connection: int = 250
    max_connections: int = 10000
    connection_idle_ms: int = 300_000
    handshake_timeout_ms: int = 10_000
    connection_age_ms: int = 1_800_000
    connection_age_grace_ms: int = 30_000
    health_watch_max: int = 1000

    @classmethod
    def from_settings(cls, settings: Settings) -> ServerLimits:
        return cls(
            max_streams_per_connection=settings.grpc_max_streams_per_connection,
            max_connections=settings.grpc_max_connections,
            connection_idle_ms=settings.grpc_connection_idle_ms,
            handshake_timeout_ms=settings.grpc_handshake_timeout_ms,
            connection_age_ms=settings.grpc_connection_age_ms,
            connection_age_grace_ms=settings.grpc_connection_age_grace_ms,
            health_watch_max=settings.health_watch_max,
        )

    def grpc_options(self) -> list[tuple[str, int]]:
        """The grpc core channel arguments of these limits (those that are on)."""
        wanted = {
            "grpc.max_concurrent_streams": self.max_streams_per_connection,
            "grpc.max_allowed_incoming_connections": connection_cap(self.max_connections),
            "grpc.max_connection_idle_ms": self.connection_idle_ms,
            "grpc.server_handshake_timeout_ms": self.handshake_timeout_ms,
            "grpc.max_connection_age_ms": self.connection_age_ms,
        }
        options = [(name, value) for name, value in wanted.items() if value > 0]
        if self.connection_age_ms > 0:
            options.append(("grpc.max_connection_age_grace_ms", self.connection_age_grace_ms))
        return options


def connection_cap(configured: int) -> int:
    """``configured``, lowered so that connections can never take the descriptors the
    process needs for anything else (0: as many as the descriptor limit allows)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return configured
    room = max(16, soft - RESERVED_DESCRIPTORS)
    if configured == 0:
        return room
    if configured > room:
        log.warning(
            "gRPC connections capped at %d (descriptor limit %d, %d kept for pools and files)",
            room,
            soft,
            RESERVED_DESCRIPTORS,
        )
        return room
    return configured
