"""The Gateway: per host a pooled httpx client, a breaker, a rate limit and a concurrency
bound, with retries of the failures that may pass."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass

import httpx
import stamina
from purgatory import AsyncCircuitBreakerFactory

from common.gateway._addresses import AddressRefused, AddressVetter, Resolver, VettingBackend
from common.gateway._breaker import HostBreaker, Ticket
from common.gateway._config import GatewayConfig
from common.gateway._http import host_key, parse_retry_after
from common.gateway._limits import HostLimits
from common.gateway._metrics import ATTEMPTS, CALL_SECONDS, CALLS, RETRIES
from common.gateway._transport import make_client, read_bounded
from common.gateway.errors import (
    CircuitOpen,
    GatewayError,
    RateLimited,
    Refused,
    RetriesExhausted,
    RetryLater,
)


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
    if isinstance(exc, Refused):
        return "refused"
    return "transport_error"  # pragma: no cover - every GatewayError is listed above


class Gateway:
    """Every outgoing HTTP call of a process goes through one of these.

    Nothing is opened before the first call (no event loop needed to build one); close it
    with :meth:`aclose`.

    ``vet_address`` makes it connect only to vetted addresses (:mod:`._addresses`): each
    new connection resolves its host once with ``resolver`` (default: the system's), every
    address found must pass ``vet_address`` (it returns why not, or None), and the
    connection goes to one of them; a failed lookup or a refused address fails the attempt
    with :class:`Refused`. Without it (the payment provider's operator-set URL) httpx
    connects by name as usual. ``ssl_context`` replaces the default (certifi) one.
    """

    def __init__(
        self,
        config: GatewayConfig | None = None,
        *,
        name: str = "gateway",
        vet_address: AddressVetter | None = None,
        resolver: Resolver | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._config = config or GatewayConfig()
        self.name = name
        if resolver is not None and vet_address is None:
            raise ValueError("a resolver is only used to vet addresses: give vet_address too")
        if vet_address is not None and self._config.trust_env:
            # Through a proxy from the environment the vetted address would be the proxy's.
            raise ValueError("vet_address cannot be combined with trust_env (proxies)")
        self._backend = VettingBackend(vet_address, resolver) if vet_address is not None else None
        self._ssl_context = ssl_context
        # One connection pool per host (``host:port``), as large as the host's concurrency
        # bound: httpcore's pool scans all its connections on every request it assigns (and
        # idle ones quadratically), so one pool over all hosts made every request slower for
        # each connection a slow host held.
        self._clients: dict[str, httpx.AsyncClient] = {}
        # Attempts (so connections in use) in flight over all hosts.
        self._in_flight = asyncio.Semaphore(self._config.max_connections)
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

        ``timeout_s`` (default ``read_timeout_s``) bounds each attempt as a whole (connect,
        send and read together) and the wait for the slots of each attempt; ``attempts``
        replaces ``retry_attempts``. ``idempotency_key`` goes out as ``Idempotency-Key`` on
        every attempt. Returns the response of any 2xx, 3xx (not followed) or 4xx other than
        429, its body cut at ``max_response_bytes`` (``extensions[TRUNCATED]``); raises a
        :class:`GatewayError` otherwise (:class:`Refused` for a URL it cannot send to).
        """
        if self._closed:
            raise RuntimeError(f"{self.name} is closed")
        try:
            key = host_key(url)
        except ValueError as exc:
            raise Refused("", f"cannot send to this URL ({exc})") from None
        host = await self._host(key)
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
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
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

    def _http(self, key: str) -> httpx.AsyncClient:
        client = self._clients.get(key)
        if client is None:
            client = self._clients[key] = make_client(
                self._config,
                self._backend,
                self._ssl_context,
                connections=self._config.max_connections_per_host,
            )
        return client

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
                # This attempt opened the breaker, or was its failed probe: stop here and
                # fail the call with what this attempt got. A CircuitOpen from the next
                # attempt would say "nothing was sent", and callers do not count those: a
                # host whose probes keep failing would never count a failed attempt.
                return False
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
                    return await self._attempt(
                        host, method, url, content, out_headers, per_attempt, timeout_s
                    )
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
        timeout_s: float,
    ) -> httpx.Response:
        # Before waiting for any slot: a call to an open breaker costs nothing.
        host.breaker.check()
        async with host.limits.slot(timeout_s, self._in_flight):
            ticket = await host.breaker.admit()
            try:
                # One deadline for the whole exchange: httpx's own timeouts are per
                # operation, and a receiver dripping a byte per read never meets them.
                async with asyncio.timeout(timeout_s):
                    response = await self._exchange(
                        host.key, method, url, content, headers, per_attempt
                    )
            except AddressRefused as exc:
                # Nothing was sent: says nothing about the host's health, and must show as
                # what it is (an open breaker would hide it behind "circuit open").
                host.breaker.abandon(ticket)
                ATTEMPTS.labels(host.key, "refused").inc()
                raise Refused(host.key, exc.reason, retryable=exc.lookup) from None
            except httpx.PoolTimeout as exc:
                # The host's pool is full (it is as large as the per-host bound, so only
                # if that is bypassed): says nothing about the host's health nor about the
                # request; the caller postpones it.
                host.breaker.abandon(ticket)
                ATTEMPTS.labels(host.key, "pool_timeout").inc()
                raise RateLimited(host.key, timeout_s, "pool") from exc
            except TimeoutError as exc:
                ATTEMPTS.labels(host.key, "timeout").inc()
                failed = _AttemptFailed(
                    "timeout",
                    None,
                    f"AttemptTimeout: no complete answer within {timeout_s:g} s",
                )
                await host.breaker.report(ticket, failed)
                raise failed from exc
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

    async def _exchange(
        self,
        key: str,
        method: str,
        url: str,
        content: bytes,
        headers: httpx.Headers,
        per_attempt: httpx.Timeout,
    ) -> httpx.Response:
        """Send, then read at most ``max_response_bytes`` of the answer (the connection is
        dropped rather than drained when more follows)."""
        client = self._http(key)
        request = client.build_request(
            method, url, content=content, headers=headers, timeout=per_attempt
        )
        response = await client.send(request, stream=True)
        return await read_bounded(response, self._config.max_response_bytes)

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
