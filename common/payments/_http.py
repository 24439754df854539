"""The HTTP adapter: a Stripe-shaped REST API with JSON bodies, through the API gateway."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from typing import Any

import httpx

from common.gateway import CircuitOpen, Gateway, GatewayError, RetryLater
from common.payments._model import (
    Charge,
    PaymentDeclined,
    PaymentRejected,
    PaymentUnavailable,
    Refund,
)

_HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}


class HttpPaymentProvider:
    """A :class:`~common.payments.PaymentProvider` speaking a Stripe-shaped API, with **JSON
    request bodies** (Stripe itself takes form-encoded ones; ``cqrs payments-sandbox``, the
    ``sandbox`` package, is a local provider speaking this dialect):

    - ``POST {base}/v1/charges`` ``{"amount": cents, "currency": "eur", "metadata":
      {"order_id": ...}}`` -> 200 ``{"id": "ch_...", "object": "charge", "amount",
      "currency", "status": "succeeded", "metadata": {"order_id"}}``;
    - ``POST {base}/v1/refunds`` ``{"charge": id, "amount": cents}`` -> 200 ``{"id":
      "re_...", "object": "refund", "charge", "amount", "status": "succeeded"}``;
    - errors ``{"error": {"type", "code", "message"}}``: 402 -> PaymentDeclined, any other
      4xx (400 invalid request or idempotency_error, 404, 409...) -> PaymentRejected.

    Every call goes through ``gateway`` with the idempotency key as ``Idempotency-Key`` (the
    gateway's retries carry it too, so a retried charge is charged once). Whatever the
    gateway raises (breaker open, retries exhausted on timeouts/5xx/429, rate limited)
    becomes PaymentUnavailable with the gateway's message as ``reason``. The gateway is the
    caller's: :meth:`aclose` leaves it open.
    """

    def __init__(self, base_url: str, gateway: Gateway, *, timeout_s: float = 5.0) -> None:
        if not base_url.lower().startswith(("http://", "https://")):
            raise ValueError(f"payment provider URL {base_url!r}: expected http(s)://")
        self._base = base_url.rstrip("/")
        self._gateway = gateway
        self._timeout_s = timeout_s

    @property
    def base_url(self) -> str:
        """The provider's base URL, without a trailing slash."""
        return self._base

    async def charge(
        self, order_id: str, amount_cents: int, currency: str, idempotency_key: str
    ) -> Charge:
        """Charge an order (see the PaymentProvider protocol)."""
        body = {
            "amount": amount_cents,
            "currency": currency.lower(),
            "metadata": {"order_id": order_id},
        }
        data = await self._post("/v1/charges", body, idempotency_key)
        charge_id, amount = data.get("id"), data.get("amount")
        code = data.get("currency")
        if (
            data.get("object") != "charge"
            or data.get("status") != "succeeded"
            or not isinstance(charge_id, str)
            or not isinstance(amount, int)
            or not isinstance(code, str)
        ):
            raise _malformed("/v1/charges", data)
        return Charge(charge_id, order_id, amount, code.upper())

    async def refund(self, charge_id: str, amount_cents: int, idempotency_key: str) -> Refund:
        """Refund part of a charge (see the PaymentProvider protocol)."""
        body = {"charge": charge_id, "amount": amount_cents}
        data = await self._post("/v1/refunds", body, idempotency_key)
        refund_id, amount = data.get("id"), data.get("amount")
        if (
            data.get("object") != "refund"
            or data.get("status") != "succeeded"
            or not isinstance(refund_id, str)
            or not isinstance(amount, int)
        ):
            raise _malformed("/v1/refunds", data)
        return Refund(refund_id, charge_id, amount)

    async def aclose(self) -> None:
        """Nothing of its own to close (the gateway is the caller's)."""

    async def _post(self, path: str, body: Mapping[str, Any], key: str) -> dict[str, Any]:
        """POST ``body`` as JSON; the answer's JSON object, or the PaymentError it means."""
        try:
            response = await self._gateway.request(
                "POST",
                self._base + path,
                content=json.dumps(body, separators=(",", ":")).encode(),
                headers=_HEADERS,
                idempotency_key=key,
                timeout_s=self._timeout_s,
            )
        except CircuitOpen as exc:
            raise PaymentUnavailable(str(exc), exc.retry_in_s) from exc
        except RetryLater as exc:
            raise PaymentUnavailable(str(exc), exc.after_s) from exc
        except GatewayError as exc:
            raise PaymentUnavailable(str(exc)) from exc
        status = response.status_code
        if 200 <= status < 300:
            try:
                data = response.json()
            except ValueError:
                data = None
            if not isinstance(data, dict):
                raise _malformed(path, response.text)
            return data
        raise _error_of(path, response)


def _malformed(path: str, what: object) -> PaymentUnavailable:
    # A 2xx we cannot read (a proxy's page, a truncated body) may or may not have moved money:
    # "rejected" would make the caller give up on a payment that perhaps happened. A retry with
    # the same idempotency key is safe either way (the provider replays its stored answer), so
    # it is "unavailable": try again later.
    return PaymentUnavailable(f"POST {path}: unexpected answer {str(what)[:200]!r}")


def _error_of(path: str, response: httpx.Response) -> PaymentDeclined | PaymentRejected:
    """The error a non-2xx answer (402, another 4xx, a 3xx not followed) stands for."""
    status = response.status_code
    error: Any = None
    with contextlib.suppress(ValueError, AttributeError):  # not JSON, or not an object
        error = response.json().get("error")
    if isinstance(error, dict):
        code = error.get("code") or error.get("type") or f"http_{status}"
        message = error.get("message") or ""
        reason = f"{code}: {message}" if message else str(code)
    else:
        reason = f"http_{status}: POST {path} answered {response.text[:200]!r}"
    if status == 402:
        return PaymentDeclined(reason)
    # Other 4xx: the provider judged the request itself (bad parameters, unknown charge,
    # idempotency key reused with other parameters); sending it again cannot help. A 3xx
    # (not followed by the gateway) is a misconfigured base URL: no better on a retry.
    return PaymentRejected(reason, status)
