"""The payments port: what a charge and a refund are, what can go wrong, and the protocol
every provider adapter implements."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Charge:
    """Money taken for an order. ``currency`` is the ISO code in upper case (``EUR``)."""

    id: str
    order_id: str
    amount_cents: int
    currency: str


@dataclass(frozen=True, slots=True)
class Refund:
    """Money given back from a charge (part or all of it)."""

    id: str
    charge_id: str
    amount_cents: int


class PaymentError(Exception):
    """Base of every payment error; ``retryable`` says whether the same call (same
    idempotency key) may succeed later."""

    retryable: bool = False

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class PaymentDeclined(PaymentError):
    """The provider answered and said no (card declined, insufficient funds...): definitive.
    ``reason`` reads ``code: message``, e.g. ``card_declined: Your card was declined.``"""

    retryable = False


class PaymentRejected(PaymentError):
    """The request itself is wrong (bad parameters, unknown charge, refund beyond the charged
    amount, idempotency key reused with other parameters): definitive. ``status`` is the HTTP
    status the provider answered (the in-memory provider uses the one the sandbox would)."""

    retryable = False

    def __init__(self, reason: str, status: int) -> None:
        super().__init__(reason)
        self.status = status


class PaymentUnavailable(PaymentError):
    """The provider could not answer now (breaker open, retries exhausted, rate limited, an
    answer we could not read). Retrying with the same idempotency key is safe; ``retry_in_s``
    is when, when known."""

    retryable = True

    def __init__(self, reason: str, retry_in_s: float | None = None) -> None:
        super().__init__(reason)
        self.retry_in_s = retry_in_s


class PaymentProvider(Protocol):
    """A payment provider. Idempotency contract of both calls: the same key with the same
    arguments returns the same result (same id, or the same decline) and never moves money
    twice; the same key with other arguments raises :class:`PaymentRejected`."""

    async def charge(
        self, order_id: str, amount_cents: int, currency: str, idempotency_key: str
    ) -> Charge:
        """Charge ``amount_cents`` (> 0) in ``currency`` (ISO code, any case) for an order."""
        ...

    async def refund(self, charge_id: str, amount_cents: int, idempotency_key: str) -> Refund:
        """Refund part of a charge; the refunds of a charge never exceed its amount."""
        ...

    async def aclose(self) -> None:
        """Release what the provider holds (not the gateway it was given)."""
        ...
