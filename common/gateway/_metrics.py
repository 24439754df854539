"""The gateway's Prometheus metrics (labelled by ``host:port``)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

# One per call: ok | client_error (4xx returned) | server_error (5xx/429 to the last attempt)
# | timeout | connect_error | transport_error (another transport failure to the last attempt)
# | circuit_open | rate_limited | retry_later | refused.
CALLS = Counter("cqrs_gateway_calls_total", "Outgoing HTTP calls by outcome", ["host", "outcome"])
CALL_SECONDS = Histogram(
    "cqrs_gateway_call_seconds",
    "Whole outgoing call, retries and back-off included",
    ["host"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
# One per attempt: what it got (ok, client_error, server_error, throttled (429), timeout,
# connect_error, transport_error), or refused (an address or lookup the policy refused:
# nothing sent) and pool_timeout (no connection free: nothing sent).
ATTEMPTS = Counter(
    "cqrs_gateway_attempts_total", "HTTP requests sent (attempts) by result", ["host", "result"]
)
RETRIES = Counter("cqrs_gateway_retries_total", "Attempts after the first one", ["host"])
BREAKER_STATE = Gauge(
    "cqrs_gateway_breaker_state", "Circuit breaker: 0 closed, 1 half-open, 2 open", ["host"]
)

BREAKER_VALUES = {"closed": 0, "half-open": 1, "open": 2}
