"""Application errors as gRPC statuses, small enough for any client.

A client rejects trailers above its metadata limit (16 KiB by default) with
RESOURCE_EXHAUSTED, which would hide the real error. So the details carry at most
:data:`MAX_DETAIL_VIOLATIONS` field violations plus one that counts the rest, and
every text is cut to :data:`MAX_TEXT` characters.
"""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

from common import errors

MAX_DETAIL_VIOLATIONS = 20
MAX_TEXT = 400

_CODES: list[tuple[type[errors.AppError], grpc.StatusCode]] = [
    (errors.InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.NotFound, grpc.StatusCode.NOT_FOUND),
    (errors.AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    (errors.FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.ConcurrencyConflict, grpc.StatusCode.ABORTED),
    (errors.Unavailable, grpc.StatusCode.UNAVAILABLE),
    (errors.ResourceExhausted, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (errors.PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
]


def code_for(exc: errors.AppError) -> grpc.StatusCode:
    return next(code for kind, code in _CODES if isinstance(exc, kind))


def clip(text: str, limit: int = MAX_TEXT) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def status_for(exc: errors.AppError) -> status_pb2.Status:
    """The google.rpc.Status (with BadRequest details for InvalidArgument) for ``exc``."""
    code = code_for(exc)
    status = status_pb2.Status(code=getattr(code_pb2, code.name), message=clip(exc.message))
    if isinstance(exc, errors.InvalidArgument):
        shown = exc.violations[:MAX_DETAIL_VIOLATIONS]
        violations = [
            error_details_pb2.BadRequest.FieldViolation(
                field=clip(v.field), description=clip(v.description)
            )
            for v in shown
        ]
        if len(exc.violations) > len(shown):
            violations.append(
                error_details_pb2.BadRequest.FieldViolation(
                    field="", description=f"{len(exc.violations) - len(shown)} more violations"
                )
            )
        detail = any_pb2.Any()
        detail.Pack(error_details_pb2.BadRequest(field_violations=violations))
        status.details.append(detail)
    return status
