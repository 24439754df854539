"""Field rules shared by create and update commands; violations are collected, not thrown one by one."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from typing import Any

from common.errors import FieldViolation, InvalidArgument
from common.field_limits import MAX_DESCRIPTION, MAX_EMAIL, MAX_TEXT
from write_server.domain.currencies import ISO_4217

MAX_PRICE_CENTS = 10**13
MAX_STOCK = 2**31 - 1  # products.stock and Product.stock are 32-bit
# orders.total_cents and Order.total_cents are 64-bit; one line is at most
# MAX_PRICE_CENTS * 10,000, so only the sum of many lines can exceed this.
MAX_ORDER_TOTAL_CENTS = 2**63 - 1
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def check_name(value: str) -> str | None:
    if not value.strip():
        return "must not be empty"
    return _max_len(value, MAX_TEXT)


def check_text(value: str) -> str | None:
    return _max_len(value, MAX_TEXT)


def check_description(value: str) -> str | None:
    return _max_len(value, MAX_DESCRIPTION)


def check_price(value: int) -> str | None:
    if value < 0:
        return "must be >= 0"
    if value > MAX_PRICE_CENTS:
        return f"must be <= {MAX_PRICE_CENTS}"
    return None


def check_stock(value: int) -> str | None:
    if value < 0:
        return "must be >= 0"
    if value > MAX_STOCK:
        return f"must be <= {MAX_STOCK}"
    return None


def check_currency(value: str) -> str | None:
    if value not in ISO_4217:
        return "must be an ISO-4217 currency code such as EUR or USD"
    return None


def check_email(value: str) -> str | None:
    if len(value) > MAX_EMAIL or not _EMAIL.match(value):
        return "must be an email address"
    return None


def check_uuid(value: str) -> str | None:
    try:
        if str(uuid.UUID(value)) == value.lower():
            return None
    except ValueError:
        pass
    return "must be a UUID"


def _max_len(value: str, limit: int) -> str | None:
    return f"must be at most {limit} characters" if len(value) > limit else None


Rule = Callable[[Any], "str | None"]


def validate(values: dict[str, Any], rules: dict[str, Rule], prefix: str = "") -> None:
    """Apply ``rules`` to the present ``values``; one InvalidArgument lists every violation."""
    violations = [
        FieldViolation(prefix + name, problem)
        for name, value in values.items()
        if name in rules and (problem := rules[name](value)) is not None
    ]
    if violations:
        raise InvalidArgument(violations)


def require_uuid(field: str, value: str) -> str:
    """Canonical form of a UUID argument, or InvalidArgument naming ``field``."""
    if check_uuid(value) is not None:
        raise InvalidArgument(FieldViolation(field, "must be a UUID"))
    return value.lower()


def require_version(value: int) -> int:
    if value < 0:
        raise InvalidArgument(FieldViolation("expected_version", "must be >= 0 (0 = don't check)"))
    return value
