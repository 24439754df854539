"""Application errors, each mapped to one gRPC status by ``common.rpc.status``.

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


# How many violations the message names; the status details carry more (see
# common.rpc.status), and both are bounded so every error fits a client's metadata limit.
MESSAGE_VIOLATIONS = 5


class InvalidArgument(AppError):
    """Bad input; carries google.rpc.BadRequest field violations.

    ``message`` replaces the summary built from the violations (e.g. for a request
    that could not be decoded at all).
    """

    def __init__(
        self, violations: list[FieldViolation] | FieldViolation, message: str | None = None
    ) -> None:
        if isinstance(violations, FieldViolation):
            violations = [violations]
        self.violations = list(violations)
        if message is None:
            shown = self.violations[:MESSAGE_VIOLATIONS]
            message = "invalid argument: " + "; ".join(f"{v.field}: {v.description}" for v in shown)
            if len(self.violations) > len(shown):
                message += f" (and {len(self.violations) - len(shown)} more)"
        super().__init__(message)


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


class ResourceExhausted(AppError):
    """A per-process bound is reached (e.g. replays running at once): retry later."""


class Unauthenticated(AppError):
    """No valid credentials: a missing, malformed or unknown API token."""


class PermissionDenied(AppError):
    """Valid credentials that do not allow this call (a read token on the write server)."""
