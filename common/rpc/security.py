"""What a server checks of its callers: API tokens (:mod:`common.rpc.auth`) and TLS
(:mod:`common.rpc.tls`), read from the settings once when the server is built."""

from __future__ import annotations

from dataclasses import dataclass

import grpc

from common.rpc.auth import Guard, guard_for, public_services
from common.rpc.tls import server_credentials
from common.settings import Settings


@dataclass(frozen=True, slots=True)
class Security:
    """``guard`` checks every call to a service not in ``public``; ``credentials`` make
    the port TLS-only. The default is an open, plaintext server."""

    guard: Guard | None = None
    public: frozenset[str] = frozenset()
    credentials: grpc.ServerCredentials | None = None


def security_for(settings: Settings, need: str) -> Security:
    """The security of a server whose calls need ``need`` ("write" or "read") access."""
    return Security(
        guard_for(settings, need), public_services(settings), server_credentials(settings)
    )
