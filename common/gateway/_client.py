"""The Gateway: one pooled httpx client, and per host a breaker, a rate limit and a
concurrency bound, with retries of the failures that may pass."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

import httpx
import stamina
from purgatory import AsyncCircuitBreakerFactory

from common.gateway._breaker import HostBreaker, Ticket
from common.gateway._config import GatewayConfig
from common.gateway._http import host_key, parse_retry_after
from common.gateway._limits import HostLimits
from common.gateway._metrics import ATTEMPTS, CALL_SECONDS, CALLS, RETRIES
from common.gateway.errors import (
    CircuitOpen,
    GatewayError,
    RateLimited,
    RetriesExhausted,
    RetryLater,
)

USER_AGENT = "cqrs-shop-gateway/1"


class _AttemptFailed(Exception):
    """A retryable failure of one attempt (internal: the call turns the last one into
    RetriesExhausted). ``outcome`` is the calls_total outcome should it be the last."""

    def __init__(
        self, outcome: str, status: int | None, error: str, retry_after_s: float | None = None
    ) -> None:
        super().__init__(error)
        self.outcome = outcome
        self.status = status
        self.error = error
        self.retry_after_s = retry_after_s


@dataclass(slots=True)
class _Host:
    key: str
    breaker: HostBreaker
    limits: HostLimits


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _transport_outcome(exc: httpx.TransportError) -> str:
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
        return "connect_error"
    if isinstance(exc, httpx.TimeoutException):
        return "timeout"
    return "transport_error"


def _error_outcome(exc: GatewayError) -> str:
    if isinstance(exc, CircuitOpen):
        return "circuit_open"
    if isinstance(exc, RateLimited):
        return "rate_limited"
    if isinstance(exc, RetryLater):
        return "retry_later"
    if isinstance(exc, RetriesExhausted):
        return exc.outcome
    return "transport_error"  # pragma: no cover - every GatewayError is listed above


class Gateway:
    """Every outgoing HTTP call of a process goes through one of these.

    Nothing is opened before the first call (no event loop needed to build one); close it
    with :meth:`aclose`.
    """

    def __init__(self, config: GatewayConfig | None = None, *, name: str = "gateway") -> None:
        self._config = config or GatewayConfig()
        self.name = name
        self._client: httpx.AsyncClient | None = None
        self._breakers = AsyncCircuitBreakerFactory(
            default_threshold=self._config.breaker_threshold,
            default_ttl=self._config.breaker_ttl_s,
        )
        self._hosts: dict[str, _Host] = {}
        self._closed = False

    @property
    def config(self) -> GatewayConfig:
        """The configuration this gateway was built with."""
        return self._config

    async def request(
        self,
        method: str,
        url: str,
        *,
        content: bytes = b"",
        headers: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
        timeout_s: float | None = None,
        attempts: int | None = None,
    ) -> httpx.Response:
        """Send one request, retrying transport errors, 5xx and 429 (see the package docs).

        ``timeout_s`` replaces the read/write/pool timeout of each attempt and bounds the wait
        for the host's rate and concurrency slots; ``attempts`` replaces ``retry_attempts``.
        ``idempotency_key`` goes out as ``Idempotency-Key`` on every attempt. Returns the
        response of any 2xx, 3xx (not followed) or 4xx other than 429; raises a
        :class:`GatewayError` otherwise (ValueError for a URL that is not http(s)).
        """
        if self._closed:
            raise RuntimeError(f"{self.name} is closed")
        host = await self._host(host_key(url))
        started = time.monotonic()
        outcome: str | None = None
        try:
            response = await self._call(
                host,
                method,
                url,
                content,
                headers,
                idempotency_key,
                timeout_s or self._config.read_timeout_s,
                max(1, attempts or self._config.retry_attempts),
            )
        except GatewayError as exc:
            outcome = _error_outcome(exc)
            raise
        else:
            outcome = "ok" if response.status_code < 400 else "client_error"
            return response
        finally:
            # A cancelled call has no outcome: it is counted nowhere.
            if outcome is not None:
                CALLS.labels(host.key, outcome).inc()
                CALL_SECONDS.labels(host.key).observe(time.monotonic() - started)

    def breaker_state(self, host: str) -> str:
        """``closed``, ``open`` or ``half-open`` for a ``host:port`` (or a URL on it)."""
        known = self._hosts.get(_key(host))
        return known.breaker.state() if known is not None else "closed"

    def open_until(self, host: str) -> float | None:
        """Monotonic time the host's breaker half-opens, or None when it is not open."""
        known = self._hosts.get(_key(host))
        return known.breaker.open_until() if known is not None else None

    async def aclose(self) -> None:
        """Close the pooled connections; later calls raise RuntimeError."""
        self._closed = True
        for host in self._hosts.values():
            host.breaker.close()
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    async def _host(self, key: str) -> _Host:
        known = self._hosts.get(key)
        if known is not None:
            return known
        breaker = await self._breakers.get_breaker(key)
        return self._hosts.setdefault(
            key,
            _Host(
                key,
                HostBreaker(key, breaker, self._config.breaker_ttl_s),
                HostLimits(key, self._config),
            ),
        )

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            cfg = self._config
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(cfg.read_timeout_s, connect=cfg.connect_timeout_s),
                limits=httpx.Limits(
                    max_connections=cfg.max_connections,
                    max_keepalive_connections=cfg.max_connections,
                ),
                follow_redirects=False,
                trust_env=cfg.trust_env,
                headers={"User-Agent": USER_AGENT},
            )
        return self._client

    async def _call(
        self,
        host: _Host,
        method: str,
        url: str,
        content: bytes,
        headers: Mapping[str, str] | None,
        idempotency_key: str | None,
        timeout_s: float,
        attempts: int,
    ) -> httpx.Response:
        cfg = self._config
        out_headers = httpx.Headers(headers)
        if idempotency_key is not None:
            out_headers["Idempotency-Key"] = idempotency_key
        per_attempt = httpx.Timeout(timeout_s, connect=min(cfg.connect_timeout_s, timeout_s))

        def backoff(exc: Exception) -> bool | float:
            if not isinstance(exc, _AttemptFailed):
                return False
            if host.breaker.state() != "closed":
                return 0.0  # the next attempt fails at once with CircuitOpen: no sleep first
            return True if exc.retry_after_s is None else exc.retry_after_s

        number = 0
        try:
            async for attempt in stamina.retry_context(
                on=backoff,
                attempts=attempts,
                timeout=None,
                wait_initial=cfg.retry_initial_s,
                wait_max=cfg.retry_max_s,
                wait_jitter=cfg.retry_initial_s,
            ):
                with attempt:
                    number = attempt.num
                    if number > 1:
                        RETRIES.labels(host.key).inc()
                    return await self._attempt(host, method, url, content, out_headers, per_attempt)
        except _AttemptFailed as exc:
            raise RetriesExhausted(
                host.key, number, exc.status, exc.error, outcome=exc.outcome
            ) from exc
        raise AssertionError("stamina ended without an attempt")  # pragma: no cover

    async def _attempt(
        self,
        host: _Host,
        method: str,
        url: str,
        content: bytes,
        headers: httpx.Headers,
        per_attempt: httpx.Timeout,
    ) -> httpx.Response:
        # Before waiting for any slot: a call to an open breaker costs nothing.
        host.breaker.check()
        assert per_attempt.read is not None
        async with host.limits.slot(per_attempt.read):
            ticket = await host.breaker.admit()
            try:
                response = await self._http().request(
                    method, url, content=content, headers=headers, timeout=per_attempt
                )
            except httpx.PoolTimeout as exc:
                # Our pool is full (other hosts): says nothing about this host.
                host.breaker.abandon(ticket)
                ATTEMPTS.labels(host.key, "pool_timeout").inc()
                raise _AttemptFailed("timeout", None, _describe(exc)) from exc
            except httpx.TransportError as exc:
                outcome = _transport_outcome(exc)
                ATTEMPTS.labels(host.key, outcome).inc()
                failed = _AttemptFailed(outcome, None, _describe(exc))
                await host.breaker.report(ticket, failed)
                raise failed from exc
            except BaseException:
                host.breaker.abandon(ticket)
                raise
        return await self._judge(host, ticket, response)

    async def _judge(self, host: _Host, ticket: Ticket, response: httpx.Response) -> httpx.Response:
        """Return the response of an attempt, or raise what its status means."""
        status = response.status_code
        if status != 429 and status < 500:
            # Anything below 500 but 429 means the host is up and answered for itself.
            ATTEMPTS.labels(host.key, "ok" if status < 400 else "client_error").inc()
            await host.breaker.report(ticket, None)
            return response
        ATTEMPTS.labels(host.key, "throttled" if status == 429 else "server_error").inc()
        retry_after = (
            parse_retry_after(response.headers.get("Retry-After")) if status in (429, 503) else None
        )
        failed = _AttemptFailed("server_error", status, f"HTTP {status}", retry_after)
        await host.breaker.report(ticket, failed)
        if retry_after is not None and retry_after > self._config.retry_after_max_s:
            raise RetryLater(host.key, retry_after, status)
        raise failed


def _key(host: str) -> str:
    """The ``host:port`` key of a key or of a URL."""
    return host_key(host) if "://" in host else host.lower()
