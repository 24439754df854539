"""A local payment provider (``cqrs payments-sandbox``) speaking the Stripe-shaped JSON API of
:class:`common.payments.HttpPaymentProvider`, for development and tests.

A real HTTP/1.1 server (asyncio streams; keep-alive, ``Content-Length`` bodies) that
behaves like the provider:

- ``POST /v1/charges`` ``{"amount", "currency", "metadata": {"order_id"}}`` -> 200 a charge
  (``ch_`` and 24 random characters), or 402 ``card_error``/``card_declined``;
- ``POST /v1/refunds`` ``{"charge", "amount"}`` -> 200 a refund (``re_...``); 404 for an
  unknown charge, 400 ``amount_too_large`` beyond what is left of the charge;
- ``Idempotency-Key``: the answer of a charge or refund (200 or 402) is stored under its key
  with a fingerprint of the request (method, path, JSON body); the same key and body replay it
  (same status and body, ``Idempotent-Replayed: true``), the same key with another body is 400
  ``idempotency_error``. Requests without a key are accepted and never de-duplicated;
  invalid requests (400/404) are not stored;
- read-only views: ``GET /v1/charges/{id}``, ``GET /v1/charges[?order_id=]``,
  ``GET /v1/refunds/{id}``, ``GET /v1/refunds[?charge=]`` (lists are ``{"object": "list",
  "data": [...]}``, newest first, as Stripe's);
- ``GET /_sandbox/stats`` ``{"requests", "charges", "refunds", "declines",
  "idempotent_replays", ...}``; ``GET``/``POST /_sandbox/behaviour`` (JSON, any subset of
  :class:`Behaviour`'s fields); ``GET /healthz``.

Faults (:class:`Behaviour`, set by flags at start or through ``POST /_sandbox/behaviour``)
apply to ``/v1/`` requests only, so the control endpoint always answers: ``latency_ms``
before anything, then ``throttle_rate`` (429 with ``Retry-After: 1``) and ``error_rate``
(500), both before any state change, then ``decline_rate`` (random per new charge, seeded by
``seed``) and ``decline_amounts`` (always decline these cent amounts: deterministic for
tests). ``down``: every ``/v1/`` request is read and its connection closed without an answer,
as a dead endpoint (state kept). ``errors_next``/``throttles_next`` fail the next N requests,
for tests that need it exactly.

State lives in memory; with ``--state PATH`` it is written to that JSON file after every
change and loaded at start, so a restarted sandbox keeps its charges, refunds and
idempotency keys.
"""

from __future__ import annotations

from sandbox._model import Behaviour
from sandbox._serve import DEFAULT_HOST, DEFAULT_PORT, behaviour_from_args, run, serve

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "Behaviour", "behaviour_from_args", "run", "serve"]
