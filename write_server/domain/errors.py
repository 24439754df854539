"""Domain errors: each is one of the application error kinds in common.errors."""

from __future__ import annotations

from common.errors import (
    AlreadyExists,
    ConcurrencyConflict,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
)

__all__ = [
    "AlreadyExists",
    "ConcurrencyConflict",
    "EmailTaken",
    "FailedPrecondition",
    "FieldViolation",
    "IllegalTransition",
    "InsufficientStock",
    "InvalidArgument",
    "NotFound",
    "StaleVersion",
    "entity_not_found",
]


def entity_not_found(kind: str, ident: str) -> NotFound:
    return NotFound(f"{kind} {ident} not found")


class EmailTaken(AlreadyExists):
    def __init__(self, email: str) -> None:
        super().__init__(f"a customer with email {email!r} already exists")


class InsufficientStock(FailedPrecondition):
    def __init__(self, product_id: str, requested: int, available: int) -> None:
        super().__init__(
            f"not enough stock for product {product_id}: requested {requested}, available {available}"
        )


class IllegalTransition(FailedPrecondition):
    def __init__(self, order_id: str, status: str, action: str) -> None:
        super().__init__(f"order {order_id} is {status}: cannot {action}")


class StaleVersion(ConcurrencyConflict):
    def __init__(self, kind: str, ident: str, expected: int, actual: int) -> None:
        super().__init__(f"{kind} {ident} is at version {actual}, expected {expected}")
