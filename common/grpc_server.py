"""gRPC server factory shared by the write and read servers.

``create_server`` builds a ``grpc.aio`` server with health checking, reflection,
error mapping and metrics, bound to ``address`` (port 0 picks a free port), and
returns it with the bound port. ``serve_until_signalled`` runs it until SIGTERM
or SIGINT and shuts down gracefully.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from grpc_status import rpc_status

from common import errors
from common.metrics import RPC_LATENCY, RPC_TOTAL

log = logging.getLogger(__name__)

_CODES: list[tuple[type[errors.AppError], grpc.StatusCode]] = [
    (errors.InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.NotFound, grpc.StatusCode.NOT_FOUND),
    (errors.AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    (errors.FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.ConcurrencyConflict, grpc.StatusCode.ABORTED),
    (errors.Unavailable, grpc.StatusCode.UNAVAILABLE),
]

# Exceptions that mean "a backing service is unreachable", whatever the library.
TransientErrors: tuple[type[BaseException], ...] = (OSError, ConnectionError, asyncio.TimeoutError)


def status_for(exc: errors.AppError) -> status_pb2.Status:
    """The google.rpc.Status (with BadRequest details for InvalidArgument) for ``exc``."""
    code = next(c for kind, c in _CODES if isinstance(exc, kind))
    status = status_pb2.Status(code=getattr(code_pb2, code.name), message=exc.message)
    if isinstance(exc, errors.InvalidArgument):
        bad_request = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(
                    field=v.field, description=v.description
                )
                for v in exc.violations
            ]
        )
        detail = any_pb2.Any()
        detail.Pack(bad_request)
        status.details.append(detail)
    return status


Translator = Callable[[BaseException], errors.AppError | None]


class ErrorAndMetricsInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Maps exceptions to statuses and records per-method metrics for unary RPCs.

    ``translate`` turns library exceptions (asyncpg, redis, SQLAlchemy) into
    AppErrors; anything still unknown is logged with a reference id and answered
    INTERNAL with only that id, never the traceback.
    """

    def __init__(self, translate: Translator | None = None) -> None:
        self._translate = translate

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        method = handler_call_details.method
        behavior = handler.unary_unary
        translate = self._translate

        async def wrapped(request: Any, context: grpc.aio.ServicerContext) -> Any:
            started = time.perf_counter()
            code = "OK"
            try:
                return await behavior(request, context)
            except asyncio.CancelledError:
                code = "CANCELLED"
                raise
            except Exception as exc:
                if _is_abort(exc):  # the handler called context.abort() itself
                    code = "ABORTED_BY_HANDLER"
                    raise
                app_error = _to_app_error(exc, translate)
                if app_error is None:
                    ref = uuid.uuid4().hex[:12]
                    log.exception("unhandled error in %s (ref %s)", method, ref)
                    code = "INTERNAL"
                    await context.abort(grpc.StatusCode.INTERNAL, f"internal error (ref {ref})")
                    raise AssertionError("unreachable: abort() raises") from exc
                status = status_for(app_error)
                code = code_pb2.Code.Name(status.code)
                await context.abort_with_status(rpc_status.to_status(status))
            finally:
                RPC_TOTAL.labels(method, code).inc()
                RPC_LATENCY.labels(method).observe(time.perf_counter() - started)

        return grpc.unary_unary_rpc_method_handler(
            wrapped,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


def _is_abort(exc: BaseException) -> bool:
    return type(exc).__name__ == "AbortError"


def _to_app_error(exc: BaseException, translate: Translator | None) -> errors.AppError | None:
    if isinstance(exc, errors.AppError):
        return exc
    app_error = translate(exc) if translate else None
    if app_error is None and isinstance(exc, TransientErrors):
        app_error = errors.Unavailable(f"backing service unavailable: {type(exc).__name__}")
    return app_error


def create_server(
    address: str,
    register: Callable[[grpc.aio.Server], Iterable[str]],
    *,
    translate: Translator | None = None,
    options: Sequence[tuple[str, Any]] = (),
) -> tuple[grpc.aio.Server, int, health.aio.HealthServicer]:
    """Build a server with ``register``'s services plus health and reflection.

    ``register`` adds the application servicers and returns their full service
    names. Returns ``(server, bound_port, health_servicer)``; call ``start()``.
    """
    server = grpc.aio.server(
        interceptors=[ErrorAndMetricsInterceptor(translate)], options=list(options)
    )
    service_names = list(register(server))
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        [*service_names, health.SERVICE_NAME, reflection.SERVICE_NAME], server
    )
    port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"could not bind {address}")
    return server, port, health_servicer


async def mark_serving(health_servicer: health.aio.HealthServicer, services: Iterable[str]) -> None:
    for name in ["", *services]:
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)


async def serve_until_signalled(
    server: grpc.aio.Server,
    health_servicer: health.aio.HealthServicer,
    *,
    grace_seconds: float = 5.0,
    on_stop: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Run until SIGTERM/SIGINT, then stop accepting calls and drain in-flight ones."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down (grace %.1fs)", grace_seconds)
    await health_servicer.enter_graceful_shutdown()
    await server.stop(grace_seconds)
    if on_stop is not None:
        await on_stop()
