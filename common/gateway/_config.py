"""The gateway's configuration."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    """Timeouts, pool size, retry, breaker and rate-limit settings; one for every host."""

    connect_timeout_s: float = 2.0
    # The default timeout of a call (``request(timeout_s=...)`` replaces it): each attempt
    # must connect, send and read its answer within it, all together (a receiver dripping a
    # byte a second is cut there), and a call waits at most this long for its slots.
    read_timeout_s: float = 5.0
    # Connections in use (attempts in flight) over all hosts: a semaphore, so an attempt
    # waits for its turn in order. Each host has a pool of its own, of the per-host size.
    max_connections: int = 100
    # Requests in flight to one host (a semaphore): a slow host cannot take the whole pool.
    max_connections_per_host: int = 10
    # The most of a response body read (the rest is not read: the connection is dropped).
    # Payment providers answer small JSON; webhook receivers get 4 KiB (the dispatcher's).
    max_response_bytes: int = 64 * 1024
    # Attempts per call (1 = no retry), exponential back-off with jitter between them.
    retry_attempts: int = 3
    retry_initial_s: float = 0.1
    retry_max_s: float = 2.0
    # A 429/503 Retry-After longer than this is not waited for inside the call: RetryLater.
    retry_after_max_s: float = 10.0
    # Consecutive failed attempts that open a host's breaker; open -> half-open after the ttl.
    breaker_threshold: int = 5
    breaker_ttl_s: float = 30.0
    # Requests per second per host (0 = unlimited), and how many may go at once after a pause.
    rate_per_host: float = 50.0
    rate_burst: int = 50
    # Off by default: a proxy from the environment would make every host one host to the
    # breaker and the limits (and tests against 127.0.0.1 would go through it).
    trust_env: bool = False

    def __post_init__(self) -> None:
        if self.retry_attempts < 1:
            raise ValueError("retry_attempts must be at least 1")
        if self.max_connections < 1 or self.max_connections_per_host < 1:
            raise ValueError("max_connections and max_connections_per_host must be at least 1")
        if self.max_response_bytes < 0:
            raise ValueError("max_response_bytes must be >= 0")
        if self.breaker_threshold < 1 or self.breaker_ttl_s <= 0:
            raise ValueError("breaker_threshold must be at least 1 and breaker_ttl_s positive")
        if self.rate_per_host < 0 or (self.rate_per_host > 0 and self.rate_burst < 1):
            raise ValueError("rate_per_host must be >= 0 and rate_burst at least 1")
