"""Payments: the port every payment provider adapter implements, and the adapters.

:class:`PaymentProvider` charges an order and refunds a charge, both idempotent by key (the
same key and arguments return the same Charge/Refund and never move money twice; the same
key with other arguments is :class:`PaymentRejected`). Errors say what to do next:
:class:`PaymentDeclined` and :class:`PaymentRejected` are definitive (``retryable`` False),
:class:`PaymentUnavailable` may pass (``retryable`` True, retry with the same key, maybe
after ``retry_in_s``).

Adapters: :class:`HttpPaymentProvider` (a Stripe-shaped JSON API through the API gateway;
``cqrs payments-sandbox`` runs a local one) and :class:`InMemoryPaymentProvider` (unit
tests). :func:`make_provider` picks one from a URL.
"""

from __future__ import annotations

from common.gateway import Gateway
from common.payments._http import HttpPaymentProvider
from common.payments._memory import Declines, InMemoryPaymentProvider
from common.payments._model import (
    Charge,
    PaymentDeclined,
    PaymentError,
    PaymentProvider,
    PaymentRejected,
    PaymentUnavailable,
    Refund,
)


def make_provider(url: str, gateway: Gateway) -> PaymentProvider:
    """The provider for ``url``: ``http(s)://...`` an HttpPaymentProvider through
    ``gateway``, ``memory:`` (or ``memory://``) a fresh InMemoryPaymentProvider; ValueError
    for anything else."""
    scheme = url.partition(":")[0].lower()
    if scheme in ("http", "https"):
        return HttpPaymentProvider(url, gateway)
    if scheme == "memory":
        return InMemoryPaymentProvider()
    raise ValueError(f"payment provider URL {url!r}: expected http(s):// or memory:")


__all__ = [
    "Charge",
    "Declines",
    "HttpPaymentProvider",
    "InMemoryPaymentProvider",
    "PaymentDeclined",
    "PaymentError",
    "PaymentProvider",
    "PaymentRejected",
    "PaymentUnavailable",
    "Refund",
    "make_provider",
]
