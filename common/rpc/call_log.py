"""What a log line about one RPC says: method, request id, status code, duration.

The per-call access log (logger ``common.rpc.access``) is DEBUG: at thousands of
calls a second an INFO line per call would be most of the output. Whether it is on is
decided once, when a server's handlers are built (:func:`access_enabled`), so with the
level above DEBUG a call pays one attribute test for it.

The request id of a call is the client's ``x-request-id`` metadata header when it sent
one (a trace id chosen by the caller or a proxy), else the request's own
``request_id`` field (the commands' idempotency key), else empty. Only the error path
and the access log look for it: the request is decoded again from its bytes there, so
the hot path carries nothing extra.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import grpc

ACCESS = logging.getLogger("common.rpc.access")
REQUEST_ID_HEADER = "x-request-id"
# A request id is an identifier: longer ones (hostile or broken clients) are cut here.
MAX_REQUEST_ID = 128

RequestIdReader = Callable[[bytes], str]


def access_enabled() -> bool:
    """True when the access log would print DEBUG lines (asked once per server build)."""
    return ACCESS.isEnabledFor(logging.DEBUG)


def body_request_id(deserializer: Callable[[bytes], Any] | None) -> RequestIdReader | None:
    """A reader of the ``request_id`` string field for requests that have one, else None."""
    owner = getattr(deserializer, "__self__", None)
    descriptor = getattr(owner, "DESCRIPTOR", None)
    field = getattr(descriptor, "fields_by_name", {}).get("request_id")
    if deserializer is None or field is None or field.type != field.TYPE_STRING:
        return None
    parse = deserializer

    def read(raw: bytes) -> str:
        try:
            return str(parse(raw).request_id)
        except Exception:  # undecodable: the call failed for that already
            return ""

    return read


def request_id(
    context: grpc.aio.ServicerContext, raw: object, reader: RequestIdReader | None
) -> str:
    """The call's request id (see the module docstring); empty when it has none."""
    found = ""
    try:
        for key, value in context.invocation_metadata() or ():
            if key == REQUEST_ID_HEADER:
                found = value if isinstance(value, str) else value.decode(errors="replace")
                break
    except Exception:  # no metadata on this context
        found = ""
    if not found and reader is not None and isinstance(raw, bytes):
        found = reader(raw)
    return found[:MAX_REQUEST_ID]


def call_fields(
    method: str, code: str, started: float, rid: str, *, now: float | None = None
) -> dict[str, object]:
    """The ``extra`` of a log line about a call (``started``: ``time.perf_counter()``)."""
    elapsed = (time.perf_counter() if now is None else now) - started
    fields: dict[str, object] = {
        "method": method,
        "code": code,
        "duration_ms": round(elapsed * 1000, 3),
    }
    if rid:
        fields["request_id"] = rid
    return fields
