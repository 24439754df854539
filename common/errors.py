"""Application errors, each mapped to one gRPC status by ``common.grpc_server``.

Domain and adapter code raise these (or subclasses); nothing else reaches the
client, so a caller never sees UNKNOWN or a stack trace.
"""

from __future__ import annotations

from dataclasses import dataclass


class AppError(Exception):
    """Base class: ``message`` is safe to show to the client."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True, slots=True)
class FieldViolation:
    field: str
    description: str


class InvalidArgument(AppError):
    """Bad input; carries google.rpc.BadRequest field violations."""

    def __init__(self, violations: list[FieldViolation] | FieldViolation) -> None:
        if isinstance(violations, FieldViolation):
            violations = [violations]
        self.violations = list(violations)
        summary = "; ".join(f"{v.field}: {v.description}" for v in self.violations)
        super().__init__(f"invalid argument: {summary}")


class NotFound(AppError):
    """The entity does not exist or was deleted."""


class AlreadyExists(AppError):
    """A uniqueness rule was violated (e.g. a duplicate email)."""


class FailedPrecondition(AppError):
    """The system is not in a state that allows the command."""


class ConcurrencyConflict(AppError):
    """Optimistic concurrency lost (stale expected_version or a concurrent writer): ABORTED."""


class Unavailable(AppError):
    """A backing service (PostgreSQL, Redis) cannot be reached, or a wait timed out."""
