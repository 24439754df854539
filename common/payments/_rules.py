"""Argument checks and messages shared by the adapters, so that the in-memory provider
rejects exactly what the HTTP provider's sandbox rejects, with the same words."""

from __future__ import annotations

import secrets
import string

from common.payments._model import PaymentRejected

DEFAULT_DECLINE = "card_declined: Your card was declined."
_ID_ALPHABET = string.ascii_letters + string.digits


def new_id(prefix: str) -> str:
    """A Stripe-shaped id: ``ch_`` / ``re_`` and 24 random letters and digits."""
    return prefix + "".join(secrets.choice(_ID_ALPHABET) for _ in range(24))


def check_amount(amount_cents: int) -> None:
    """PaymentRejected (400) unless a positive whole number of cents."""
    # bool is an int to Python but never an amount.
    if isinstance(amount_cents, bool) or not isinstance(amount_cents, int) or amount_cents < 1:
        raise PaymentRejected(
            f"parameter_invalid_integer: amount must be a positive integer, got {amount_cents!r}",
            400,
        )


def check_currency(currency: str) -> str:
    """The ISO code in upper case; PaymentRejected (400) unless three letters."""
    if not isinstance(currency, str) or len(currency) != 3 or not currency.isalpha():
        raise PaymentRejected(f"parameter_invalid: currency {currency!r} is not an ISO code", 400)
    return currency.upper()


def idempotency_conflict(key: str) -> PaymentRejected:
    """The error for a key reused with other parameters (HTTP 400, as Stripe answers)."""
    return PaymentRejected(
        f"idempotency_error: Keys for idempotent requests can only be used with the same "
        f"parameters they were first used with (key {key!r})",
        400,
    )


def unknown_charge(charge_id: str) -> PaymentRejected:
    """The error for a refund of a charge the provider does not know (HTTP 404)."""
    return PaymentRejected(f"resource_missing: No such charge: {charge_id!r}", 404)


def refund_too_large(amount_cents: int, left_cents: int) -> PaymentRejected:
    """The error for a refund beyond what is left of the charge (HTTP 400)."""
    return PaymentRejected(
        f"amount_too_large: Refund amount ({amount_cents}) is greater than the unrefunded "
        f"amount of the charge ({left_cents})",
        400,
    )
