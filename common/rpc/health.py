"""grpc.health.v1.Health for our servers, with a shutdown that lets the server go.

Like grpcio-health-checking's asyncio servicer (Check, List, Watch, ``set``,
``enter_graceful_shutdown``), with two differences that matter on SIGTERM:

- a Watch stream ends (OK) right after it has sent NOT_SERVING on shutdown: an open
  Watch is an in-flight call, and the stock servicer's never ends, so every watcher
  (a balancer, a sidecar) held the server for its whole grace period;
- :attr:`serving` tells other threads (the ops HTTP endpoint's ``/healthz``) whether
  the server as a whole ("") is SERVING, without touching the event loop;

and two bounds, since health is reachable without a token: at most ``max_watches``
Watch streams are open at once (one more is RESOURCE_EXHAUSTED at once), and a Watch
for a name longer than any service's (:data:`MAX_SERVICE_NAME`) is NOT_FOUND at once
rather than a stream holding the caller's megabytes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
from grpc_health.v1 import health_pb2

from common.field_limits import MAX_TEXT
from common.rpc.status import clip

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICE_UNKNOWN = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
# No service of ours has a longer name; a Watch for one cannot become known.
MAX_SERVICE_NAME = MAX_TEXT


class HealthServicer:
    """Per-service statuses; "" is the server as a whole (NOT_SERVING until started).
    ``max_watches`` bounds the Watch streams open at once (0: no bound)."""

    def __init__(self, max_watches: int = 0) -> None:
        self._status: dict[str, int] = {"": NOT_SERVING}
        self._changed = asyncio.Event()  # replaced on every change: wakes every watcher
        self.shutting_down = False
        self._max_watches = max_watches
        self.watching = 0  # Watch streams open now

    @property
    def serving(self) -> bool:
        """True while the whole server reports SERVING (safe to read from any thread)."""
        return bool(self._status.get("") == SERVING)

    async def Check(
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext
    ) -> health_pb2.HealthCheckResponse:
        status = self._status.get(request.service)
        if status is None:
            # Clipped: the name is the caller's, and a long one would overflow the trailers.
            await context.abort(
                grpc.StatusCode.NOT_FOUND, clip(f"unknown service {request.service!r}")
            )
            raise AssertionError("unreachable: abort() raises")
        return health_pb2.HealthCheckResponse(status=status)

    async def List(
        self, request: health_pb2.HealthListRequest, context: grpc.aio.ServicerContext
    ) -> health_pb2.HealthListResponse:
        statuses = {
            name: health_pb2.HealthCheckResponse(status=status)
            for name, status in self._status.items()
        }
        return health_pb2.HealthListResponse(statuses=statuses)

    async def Watch(
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[health_pb2.HealthCheckResponse]:
        if len(request.service) > MAX_SERVICE_NAME:
            await context.abort(
                grpc.StatusCode.NOT_FOUND, clip(f"unknown service {request.service!r}")
            )
        if self._max_watches and self.watching >= self._max_watches:
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"too many health Watch streams on this server (at most {self._max_watches});"
                " use Check, or retry later",
            )
        self.watching += 1
        try:
            last: int | None = None
            while True:
                changed = self._changed
                status = self._status.get(request.service, SERVICE_UNKNOWN)
                if status != last:
                    yield health_pb2.HealthCheckResponse(status=status)
                    last = status
                if self.shutting_down:
                    return  # NOT_SERVING was sent: free the server to stop
                await changed.wait()
        finally:
            self.watching -= 1

    async def set(self, service: str, status: int) -> None:
        """Report ``service``'s status (ignored once shutting down)."""
        if not self.shutting_down:
            self._update(service, status)

    async def enter_graceful_shutdown(self) -> None:
        """Every service NOT_SERVING for good; watchers are told, then their streams end."""
        if self.shutting_down:
            return
        self.shutting_down = True
        for service in list(self._status):
            self._status[service] = NOT_SERVING
        self._wake()

    def _update(self, service: str, status: int) -> None:
        self._status[service] = status
        self._wake()

    def _wake(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
