"""The gateway's httpx client, and reading an answer without letting it grow.

With an address policy the client's connections go through :class:`VettingBackend`;
without one (the payment provider, an operator-configured URL that may well be 127.0.0.1)
httpx connects as usual. Either way every response body is read only up to a bound.
"""

from __future__ import annotations

import ssl

import httpcore
import httpx

from common.gateway._config import GatewayConfig

USER_AGENT = "cqrs-shop-gateway/1"
# Set on every response the gateway returns: True when the body was cut at the bound.
TRUNCATED = "cqrs_truncated"
# Describe the raw body the gateway read, which they no longer would: the copy it returns
# holds at most max_response_bytes of it, not decoded.
_DROPPED_HEADERS = frozenset({b"content-encoding", b"content-length", b"transfer-encoding"})


def make_client(
    config: GatewayConfig,
    backend: httpcore.AsyncNetworkBackend | None,
    ssl_context: ssl.SSLContext | None = None,
    connections: int | None = None,
) -> httpx.AsyncClient:
    """The pooled client: redirects not followed, ``Accept-Encoding: identity`` (a bounded
    read of a compressed body would be a decompression bomb's to decide), and connections
    made through ``backend`` when one is given; at most ``connections`` (default
    ``max_connections``) in its pool."""
    size = connections or config.max_connections
    limits = httpx.Limits(max_connections=size, max_keepalive_connections=size)
    context = ssl_context or httpx.create_ssl_context(trust_env=config.trust_env)
    transport = httpx.AsyncHTTPTransport(verify=context, limits=limits, trust_env=config.trust_env)
    if backend is not None:
        _connect_through(transport, backend, limits, context)
    return httpx.AsyncClient(
        transport=transport,
        timeout=httpx.Timeout(config.read_timeout_s, connect=config.connect_timeout_s),
        follow_redirects=False,
        trust_env=config.trust_env,
        headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"},
    )


def _connect_through(
    transport: httpx.AsyncHTTPTransport,
    backend: httpcore.AsyncNetworkBackend,
    limits: httpx.Limits,
    context: ssl.SSLContext,
) -> None:
    """Make ``transport`` connect through ``backend``.

    httpx 0.29's AsyncHTTPTransport takes no network backend, though the httpcore pool under
    it does (``network_backend=``, public). So this replaces that pool, ``transport._pool``
    (the one private attribute the gateway touches, here only), with one built with the same
    settings and ``backend``. Checked first: should a later httpx rename or retype it, the
    gateway fails to start instead of connecting by name, unvetted.
    """
    current = getattr(transport, "_pool", None)
    if type(current) is not httpcore.AsyncConnectionPool:
        raise RuntimeError(
            "httpx.AsyncHTTPTransport no longer keeps its httpcore pool in _pool: "
            "the gateway cannot vet the addresses it connects to"
        )
    transport._pool = httpcore.AsyncConnectionPool(
        ssl_context=context,
        max_connections=limits.max_connections,
        max_keepalive_connections=limits.max_keepalive_connections,
        keepalive_expiry=limits.keepalive_expiry,
        network_backend=backend,
    )


async def read_bounded(response: httpx.Response, limit: int) -> httpx.Response:
    """Read at most ``limit`` bytes of a streamed ``response``'s raw body, close it (a body
    left unread closes its connection instead of going back to the pool), and return a
    copy holding those bytes; ``extensions[TRUNCATED]`` says whether it stopped at the
    bound (a body of exactly ``limit`` bytes counts as cut: what follows is not awaited)."""
    parts: list[bytes] = []
    size = 0
    truncated = False
    try:
        if limit == 0:
            truncated = True
        else:
            async for chunk in response.aiter_raw():
                room = limit - size
                parts.append(chunk[:room])
                size += min(len(chunk), room)
                if size >= limit:
                    truncated = True
                    break
    finally:
        await response.aclose()
    return httpx.Response(
        response.status_code,
        headers=[(k, v) for k, v in response.headers.raw if k.lower() not in _DROPPED_HEADERS],
        content=b"".join(parts),
        request=response.request,
        extensions={
            "http_version": response.extensions.get("http_version", b"HTTP/1.1"),
            "reason_phrase": response.extensions.get("reason_phrase", b""),
            TRUNCATED: truncated,
        },
    )
