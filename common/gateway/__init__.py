"""One API gateway for every outgoing HTTP call (webhook deliveries, payment providers).

A :class:`Gateway` holds, per host (``host:port`` of the URL, lower-case), a pooled
``httpx.AsyncClient`` of its own (redirects not followed; a pool as large as the host's
concurrency bound, so one host's connections never slow another's requests) and:

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
attempt fails, :class:`RetriesExhausted`; when an attempt opens the breaker (or was its
failed probe) the retries stop there, and the call fails with :class:`RetriesExhausted` too
(:class:`CircuitOpen` only ever means that no attempt of the call was sent, so a caller
counting failed attempts counts every failed probe). Retried requests carry the same
``Idempotency-Key``, so a receiver can drop a duplicate of a request it did process.

Bounds an outsider's endpoint cannot grow: each attempt (connect, send, read) must end
within the call's timeout, all of it together; at most ``max_response_bytes`` of an answer
are read (the connection is then dropped, not drained), and the gateway asks for no
compression. At most ``max_connections`` attempts are in flight over all hosts (waiters
served in order); a wait for any slot that outlasts the timeout is :class:`RateLimited`
(``limit`` rate, concurrency or pool), which says nothing about the request: callers
postpone it rather than count a failure.

With ``vet_address`` (webhooks), every connection resolves its host once, vets every
address found and connects to one of them (``Host``, SNI and the certificate check keep
the name): a refused address or a failed lookup is :class:`Refused`, never retried inside
the call and never counted against the breaker.

Metrics: ``cqrs_gateway_calls_total{host,outcome}``, ``cqrs_gateway_call_seconds{host}``,
``cqrs_gateway_attempts_total{host,result}``, ``cqrs_gateway_retries_total{host}``,
``cqrs_gateway_breaker_state{host}`` (0 closed, 1 half-open, 2 open).
"""

from __future__ import annotations

from common.gateway._addresses import AddressVetter, Resolver, system_resolver
from common.gateway._client import Gateway
from common.gateway._config import GatewayConfig
from common.gateway._http import host_key, parse_retry_after
from common.gateway._transport import TRUNCATED, USER_AGENT
from common.gateway.errors import (
    CircuitOpen,
    GatewayError,
    RateLimited,
    Refused,
    RetriesExhausted,
    RetryLater,
)

__all__ = [
    "TRUNCATED",
    "USER_AGENT",
    "AddressVetter",
    "CircuitOpen",
    "Gateway",
    "GatewayConfig",
    "GatewayError",
    "RateLimited",
    "Refused",
    "Resolver",
    "RetriesExhausted",
    "RetryLater",
    "host_key",
    "parse_retry_after",
    "system_resolver",
]
