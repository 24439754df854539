"""One API gateway for every outgoing HTTP call (webhook deliveries, payment providers).

A :class:`Gateway` holds one pooled ``httpx.AsyncClient`` (redirects not followed) and, per
host (``host:port`` of the URL, lower-case):

- a **circuit breaker** (purgatory): ``breaker_threshold`` consecutive failed attempts open
  it; while open every call fails at once with :class:`CircuitOpen` without touching the
  network, so a dead endpoint costs nothing; after ``breaker_ttl_s`` one probe goes through
  (concurrent calls still get CircuitOpen), its success closes the breaker, its failure
  re-opens it for another ttl;
- a **rate limit** (aiolimiter, ``rate_per_host`` with ``rate_burst``) and a **concurrency
  bound** (``max_connections_per_host``): a call waits for its slots at most its timeout,
  then fails with :class:`RateLimited`; one slow or limited host never delays another.

What is retried inside a call, with exponential back-off and jitter (stamina), and why: the
failures that say nothing about the request itself and may pass — transport errors
(refused or reset connections, connect/read/write timeouts), HTTP 5xx, and HTTP 429. A 429
or 503 with ``Retry-After`` (seconds or an HTTP-date) is retried after that pause when it is
at most ``retry_after_max_s``; a longer one fails the call at once with :class:`RetryLater`
so the caller reschedules instead of holding a task. Those failures also count against the
breaker. Everything else — 2xx, 3xx, 4xx other than 429 — is the host's answer: returned
as it is, never retried, and a success to the breaker (the host is up). When the last
attempt fails, :class:`RetriesExhausted`; when the breaker opens between attempts, the
retries stop with :class:`CircuitOpen`. Retried requests carry the same
``Idempotency-Key``, so a receiver can drop a duplicate of a request it did process.

Metrics: ``cqrs_gateway_calls_total{host,outcome}``, ``cqrs_gateway_call_seconds{host}``,
``cqrs_gateway_attempts_total{host,result}``, ``cqrs_gateway_retries_total{host}``,
``cqrs_gateway_breaker_state{host}`` (0 closed, 1 half-open, 2 open).
"""

from __future__ import annotations

from common.gateway._client import USER_AGENT, Gateway
from common.gateway._config import GatewayConfig
from common.gateway._http import host_key, parse_retry_after
from common.gateway.errors import (
    CircuitOpen,
    GatewayError,
    RateLimited,
    RetriesExhausted,
    RetryLater,
)

__all__ = [
    "USER_AGENT",
    "CircuitOpen",
    "Gateway",
    "GatewayConfig",
    "GatewayError",
    "RateLimited",
    "RetriesExhausted",
    "RetryLater",
    "host_key",
    "parse_retry_after",
]
