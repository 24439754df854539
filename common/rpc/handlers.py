"""Method handlers: decoding, error mapping and metrics, written once for every RPC.

:func:`wrap` turns any ``grpc.RpcMethodHandler`` (generated ones, health,
reflection) into one that receives raw bytes and decodes them itself (see
:mod:`common.rpc.decoding`), maps exceptions to statuses and counts the call.
This replaces a server interceptor, which grpc.aio runs as an extra coroutine
per call. :func:`service_handlers` builds the handlers of one of our services
straight from its descriptor: the servicer has one ``async def`` per RPC, named
like the RPC, returning the response message or its serialized bytes.

Exceptions: an ``AppError`` (or what ``translate`` makes of a library error, or an
outage per :mod:`common.outages`) becomes its status; anything else is a bug,
logged with a reference id and answered INTERNAL with only that id.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from grpc_status import rpc_status

from common import errors
from common.metrics import RPC_LATENCY, RPC_TOTAL
from common.outages import is_outage
from common.rpc import call_log
from common.rpc.decoding import decode, message_name
from common.rpc.status import clip, code_for, status_for

log = logging.getLogger(__name__)

Translator = Callable[[BaseException], errors.AppError | None]
# Raises an AppError (UNAUTHENTICATED, PERMISSION_DENIED) to refuse a call.
Admit = Callable[[grpc.aio.ServicerContext], None]


def serialize(response: Any) -> bytes:
    """Responses are messages, or bytes already serialized (e.g. stored documents)."""
    return response if isinstance(response, bytes) else bytes(response.SerializeToString())


def service_handlers(
    descriptor: ServiceDescriptor,
    servicer: object,
    translate: Translator | None,
    admit: Admit | None = None,
) -> dict[str, grpc.RpcMethodHandler]:
    """Handlers for every method of ``descriptor`` from ``servicer``: unary ones, and
    server-streaming ones (an async generator of messages or serialized bytes)."""
    handlers: dict[str, grpc.RpcMethodHandler] = {}
    for method in descriptor.methods:
        if method.client_streaming:
            raise TypeError(f"{method.full_name}: client streaming is not supported")
        request_type = _message_class(method.input_type)
        behaviour = getattr(servicer, method.name)
        make = (
            grpc.unary_stream_rpc_method_handler
            if method.server_streaming
            else grpc.unary_unary_rpc_method_handler
        )
        handler = make(
            behaviour, request_deserializer=request_type.FromString, response_serializer=serialize
        )
        handlers[method.name] = wrap(
            f"/{descriptor.full_name}/{method.name}", handler, translate, admit
        )
    return handlers


def _message_class(descriptor: Any) -> Any:
    from google.protobuf import message_factory

    return message_factory.GetMessageClass(descriptor)


def wrap(
    method: str,
    handler: grpc.RpcMethodHandler,
    translate: Translator | None,
    admit: Admit | None = None,
) -> grpc.RpcMethodHandler:
    """``handler`` decoding its own requests, with error mapping and metrics; ``admit``
    (an API-token check, :mod:`common.rpc.auth`) runs before a request is decoded."""
    deserializer = handler.request_deserializer
    name = message_name(deserializer) if deserializer else "message"
    call = _Call(method, translate, call_log.body_request_id(deserializer))

    # Chosen here, once: an open server's calls take the path without the check.
    if admit is None:

        def decoded(raw: Any, context: grpc.aio.ServicerContext) -> Any:
            return decode(deserializer, raw, name) if deserializer is not None else raw

    else:
        guard = admit

        def decoded(raw: Any, context: grpc.aio.ServicerContext) -> Any:
            guard(context)
            return decode(deserializer, raw, name) if deserializer is not None else raw

    if handler.unary_unary is not None:
        unary = handler.unary_unary

        async def unary_unary(raw: bytes, context: grpc.aio.ServicerContext) -> Any:
            return await call.run(context, lambda: unary(decoded(raw, context), context), raw)

        return grpc.unary_unary_rpc_method_handler(
            unary_unary, response_serializer=handler.response_serializer
        )
    if handler.unary_stream is not None:
        stream = handler.unary_stream

        async def unary_stream(raw: bytes, context: grpc.aio.ServicerContext) -> Any:
            return await call.run_streaming(
                context, lambda: stream(decoded(raw, context), context), raw
            )

        return grpc.unary_stream_rpc_method_handler(
            unary_stream, response_serializer=handler.response_serializer
        )
    inbound = handler.stream_unary or handler.stream_stream
    assert inbound is not None

    async def requests(raw: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> Any:
        async for item in raw:
            try:
                yield decoded(item, context)
            except errors.AppError as exc:
                await call.abort(context, exc)

    if handler.stream_unary is not None:
        client_stream = handler.stream_unary

        async def stream_unary(raw: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> Any:
            return await call.run(context, lambda: client_stream(requests(raw, context), context))

        return grpc.stream_unary_rpc_method_handler(
            stream_unary, response_serializer=handler.response_serializer
        )

    async def stream_stream(raw: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> Any:
        return await call.run_streaming(context, lambda: inbound(requests(raw, context), context))

    return grpc.stream_stream_rpc_method_handler(
        stream_stream, response_serializer=handler.response_serializer
    )


class _Call:
    """Runs one method's behaviour: statuses for errors, the metrics, the access log."""

    def __init__(
        self,
        method: str,
        translate: Translator | None,
        request_ids: call_log.RequestIdReader | None = None,
    ) -> None:
        self.method = method
        self._translate = translate
        self._request_ids = request_ids
        self._access = call_log.access_enabled()  # decided once: nothing per call when off
        self._ok = RPC_TOTAL.labels(method, "OK")
        self._latency = RPC_LATENCY.labels(method)

    async def run(
        self,
        context: grpc.aio.ServicerContext,
        behaviour: Callable[[], Awaitable[Any]],
        raw: object = None,
    ) -> Any:
        """Await ``behaviour``; ``raw`` (the request's bytes) is read only to name the
        call's request id in a log line."""
        started = time.perf_counter()
        code = "OK"
        try:
            return await behaviour()
        except asyncio.CancelledError:
            code = "CANCELLED"
            raise
        except Exception as exc:
            if _is_abort(exc):  # context.abort() already set the status
                code = _code_name(context, "UNKNOWN")
                raise
            app_error = self._app_error(exc)
            if app_error is None:
                ref = uuid.uuid4().hex[:12]
                rid = call_log.request_id(context, raw, self._request_ids)
                log.exception(
                    "unhandled error in %s (ref %s)",
                    self.method,
                    ref,
                    extra={
                        "ref": ref,
                        **call_log.call_fields(self.method, "INTERNAL", started, rid),
                    },
                )
                code = "INTERNAL"
                await context.abort(grpc.StatusCode.INTERNAL, f"internal error (ref {ref})")
            else:
                code = code_for(app_error).name
                await self.abort(context, app_error)
            raise AssertionError("unreachable: abort() raises") from exc
        finally:
            if code == "OK":
                code = _code_name(context, "OK")  # a behaviour may set it (health: NOT_FOUND)
            if code == "OK":
                self._ok.inc()
            else:
                RPC_TOTAL.labels(self.method, code).inc()
            self._latency.observe(time.perf_counter() - started)
            if self._access:
                self._log_access(context, raw, code, started)

    def _log_access(
        self, context: grpc.aio.ServicerContext, raw: object, code: str, started: float
    ) -> None:
        rid = call_log.request_id(context, raw, self._request_ids)
        fields = call_log.call_fields(self.method, code, started, rid)
        call_log.ACCESS.debug(
            "%s %s %.2fms", self.method, code, fields["duration_ms"], extra=fields
        )

    async def run_streaming(
        self, context: grpc.aio.ServicerContext, behaviour: Callable[[], Any], raw: object = None
    ) -> None:
        """A server-streaming behaviour: an async generator, or a coroutine that writes."""

        async def drive() -> None:
            result = behaviour()
            if inspect.isasyncgen(result):
                async for response in result:
                    await context.write(response)
            else:
                await result

        await self.run(context, drive, raw)

    async def abort(self, context: grpc.aio.ServicerContext, exc: errors.AppError) -> None:
        if isinstance(exc, errors.InvalidArgument):  # the only one with details to carry
            await context.abort_with_status(rpc_status.to_status(status_for(exc)))
        # A plain status costs a fifth less; it matters when many calls give up at once.
        await context.abort(code_for(exc), clip(exc.message))

    def _app_error(self, exc: BaseException) -> errors.AppError | None:
        if isinstance(exc, errors.AppError):
            return exc
        translated = self._translate(exc) if self._translate is not None else None
        if translated is None and is_outage(exc):
            translated = errors.Unavailable(f"backing service unavailable: {type(exc).__name__}")
        return translated


def _is_abort(exc: BaseException) -> bool:
    return type(exc).__name__ == "AbortError"


def _code_name(context: grpc.aio.ServicerContext, default: str) -> str:
    code = context.code()
    return code.name if isinstance(code, grpc.StatusCode) else default
