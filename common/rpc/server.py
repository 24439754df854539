"""Building and running a grpc.aio server: our services, health and reflection.

``build_server`` registers every service through :func:`common.rpc.handlers.wrap`
(health and reflection too, so no method answers UNKNOWN to undecodable bytes),
binds ``address`` (port 0 picks a free port) and returns the server unstarted, with
the bounds of :mod:`common.rpc.limits` (streams, connections, idle and age, Watches).
``serve_until_signalled`` runs a started server until SIGTERM/SIGINT: health
turns NOT_SERVING first (Watch streams are told and end), new calls are still taken
for the drain period (a balancer polling health moves away meanwhile), then the
listener closes, new calls are refused and in-flight calls get the grace period.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from grpc_health.v1 import health, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc

from common import runtime
from common.metrics import start_metrics_server
from common.ops_http import Health, HealthCheck
from common.rpc.handlers import Admit, Translator, service_handlers, wrap
from common.rpc.health import SERVING, HealthServicer
from common.rpc.limits import ServerLimits
from common.rpc.security import Security
from common.settings import Settings

log = logging.getLogger(__name__)

OPEN = Security()
DEFAULT_LIMITS = ServerLimits()


@dataclass(frozen=True, slots=True)
class Service:
    """One of our services: its descriptor and a servicer with one method per RPC."""

    descriptor: ServiceDescriptor
    servicer: object

    @property
    def name(self) -> str:
        return str(self.descriptor.full_name)


@dataclass(frozen=True, slots=True)
class BuiltServer:
    """A bound, not yet started server, its port and its health servicer."""

    server: grpc.aio.Server
    port: int
    health: HealthServicer
    service_names: tuple[str, ...]
    # Servicers' own ``enter_graceful_shutdown`` (e.g. to end their streams), told with health.
    stopping: tuple[Callable[[], Awaitable[None]], ...] = ()

    async def enter_graceful_shutdown(self) -> None:
        """Health NOT_SERVING (its Watch streams end), and every servicer told."""
        await self.health.enter_graceful_shutdown()
        for stop in self.stopping:
            await stop()

    async def start(self) -> None:
        """Start serving and report every service SERVING."""
        await self.server.start()
        for name in ("", *self.service_names):
            await self.health.set(name, SERVING)


def build_server(
    address: str,
    services: Sequence[Service],
    *,
    translate: Translator | None = None,
    options: Sequence[tuple[str, Any]] = (),
    security: Security = OPEN,
    limits: ServerLimits = DEFAULT_LIMITS,
) -> BuiltServer:
    """``services`` plus health and reflection, bound to ``address``; not started; with
    the API-token checks and TLS of ``security`` (default: open, plaintext) and the
    bounds of ``limits`` (:mod:`common.rpc.limits`; ``options`` win over them)."""
    given = {name for name, _ in options}
    bounds = [option for option in limits.grpc_options() if option[0] not in given]
    server = grpc.aio.server(options=[*bounds, *options])
    guard = security.guard

    def admit(name: str) -> Admit | None:
        return guard.admit if guard is not None and name not in security.public else None

    for service in services:
        handlers = service_handlers(
            service.descriptor, service.servicer, translate, admit(service.name)
        )
        _add(server, service.name, handlers)
    health_servicer = HealthServicer(limits.health_watch_max)
    names = [s.name for s in services]
    for add_to_server, servicer in (
        (health_pb2_grpc.add_HealthServicer_to_server, health_servicer),
        (
            reflection_pb2_grpc.add_ServerReflectionServicer_to_server,
            reflection.aio.ReflectionServicer(
                [*names, health.SERVICE_NAME, reflection.SERVICE_NAME]
            ),
        ),
    ):
        captured = _Capture()
        add_to_server(servicer, captured)
        for name, handlers in captured.services.items():
            wrapped = {
                m: wrap(f"/{name}/{m}", h, translate, admit(name)) for m, h in handlers.items()
            }
            _add(server, name, wrapped)
    if security.credentials is None:
        port = server.add_insecure_port(address)
    else:
        port = server.add_secure_port(address, security.credentials)
    if port == 0:
        raise OSError(f"could not bind {address}")
    stopping = tuple(
        s.servicer.enter_graceful_shutdown
        for s in services
        if hasattr(s.servicer, "enter_graceful_shutdown")
    )
    return BuiltServer(server, port, health_servicer, tuple(names), stopping)


def grpc_health(built: BuiltServer) -> HealthCheck:
    """A ``/healthz`` check (:mod:`common.ops_http`) mirroring the gRPC health status."""

    def check() -> Health:
        serving = built.health.serving
        return Health(serving, {"status": "SERVING" if serving else "NOT_SERVING"})

    return check


def _add(server: grpc.aio.Server, name: str, handlers: dict[str, grpc.RpcMethodHandler]) -> None:
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(name, handlers),))
    # Lets the C core route these methods without the generic lookup, as generated code does.
    server.add_registered_method_handlers(name, handlers)


class _Capture:
    """Stands in for a server while generated ``add_*_to_server`` code registers handlers."""

    def __init__(self) -> None:
        self.services: dict[str, dict[str, grpc.RpcMethodHandler]] = {}

    def add_generic_rpc_handlers(self, handlers: Iterable[Any]) -> None:
        """Ignored: the same handlers arrive through ``add_registered_method_handlers``."""

    def add_registered_method_handlers(
        self, name: str, handlers: dict[str, grpc.RpcMethodHandler]
    ) -> None:
        self.services[name] = dict(handlers)


class Closable(Protocol):
    async def close(self) -> None: ...


AppT = TypeVar("AppT", bound=Closable)


async def serve_process(
    settings: Settings,
    *,
    what: str,
    host: str,
    port: int,
    metrics_port: int,
    bootstrap: Callable[[Settings], Awaitable[AppT]],
    create: Callable[[AppT, str], BuiltServer],
) -> None:
    """A server process: its ops endpoint (/metrics, /healthz mirroring gRPC health) from
    the start, its app and server, then :func:`run_app` until SIGTERM/SIGINT."""
    ops = start_metrics_server(metrics_port, settings.metrics_host)
    try:
        app = await bootstrap(settings)
        built = create(app, f"{host}:{port}")
        if ops is not None:
            ops.health = grpc_health(built)
        await run_app(
            app,
            built,
            what,
            host,
            grace_seconds=settings.seconds.shutdown_grace,
            drain_seconds=settings.seconds.shutdown_drain,
        )
    finally:
        if ops is not None:
            ops.close()


async def run_app(
    app: Closable,
    built: BuiltServer,
    what: str,
    host: str,
    *,
    grace_seconds: float = 5.0,
    drain_seconds: float = 0.0,
) -> None:
    """Start ``built``, serve until SIGTERM/SIGINT, then close ``app`` (whatever happens)."""
    try:
        await built.start()
        log.info("%s listening on %s:%d (%s)", what, host, built.port, runtime.loop_name())
        await serve_until_signalled(built, grace_seconds=grace_seconds, drain_seconds=drain_seconds)
    finally:
        await app.close()


async def serve_until_signalled(
    built: BuiltServer,
    *,
    grace_seconds: float = 5.0,
    drain_seconds: float = 0.0,
    on_stop: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Run until SIGTERM/SIGINT, then report NOT_SERVING, keep taking calls for
    ``drain_seconds``, stop accepting calls and give in-flight ones ``grace_seconds``."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    log.info(
        "shutting down: health NOT_SERVING, drain %.1fs, then grace %.1fs for calls in flight",
        drain_seconds,
        grace_seconds,
    )
    await built.enter_graceful_shutdown()
    if drain_seconds > 0:
        await asyncio.sleep(drain_seconds)
    started = loop.time()
    await built.server.stop(grace_seconds)
    log.info("stopped serving after %.2fs", loop.time() - started)
    if on_stop is not None:
        await on_stop()
