"""Which URLs a webhook may be delivered to: the server-side request forgery guard.

A webhook makes *our* servers send requests to an address a client chose, so by default
only public http(s) destinations are accepted: no loopback, private, link-local
(169.254.0.0/16 and fe80::/10, where cloud metadata services live), unique-local,
multicast, reserved or unspecified address, no well-known metadata host name, no
credentials in the URL. ``CQRS_WEBHOOKS_ALLOW_PRIVATE`` lifts the address rules (tests and
local development deliver to 127.0.0.1).

The same rules are applied twice: to the URL when a subscription is created (literal
addresses and names), and to every address the host name resolves to right before each
delivery (:func:`resolved_problem`), so a name that later resolves to a private address
(DNS rebinding) is refused too.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

MAX_URL = 2048
_METADATA_HOSTS = frozenset(
    {"metadata", "metadata.google.internal", "metadata.goog", "instance-data", "localhost"}
)


def url_problem(url: str, *, allow_private: bool) -> str | None:
    """Why ``url`` cannot be a webhook endpoint, or ``None`` if it can."""
    if len(url) > MAX_URL:
        return f"must be at most {MAX_URL} characters"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return f"is not a valid URL ({exc})"
    if parts.scheme not in ("http", "https"):
        return "must be an http:// or https:// URL"
    host = (parts.hostname or "").rstrip(".")
    if not host:
        return "must name a host"
    if parts.username is not None or parts.password is not None:
        return "must not carry credentials (put them in the endpoint's own check of the signature)"
    if port == 0:
        return "must not use port 0"
    if parts.fragment:
        return "must not have a #fragment"
    if allow_private:
        return None
    if host.lower() in _METADATA_HOSTS or host.lower().endswith(".localhost"):
        return (
            f"host {host!r} is a local or metadata name (set CQRS_WEBHOOKS_ALLOW_PRIVATE to allow)"
        )
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None  # a name: its addresses are checked before each delivery
    return address_problem(address)


def address_problem(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Why a delivery must not go to ``address`` (without ALLOW_PRIVATE), or ``None``."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if not address.is_global or address.is_multicast:
        return (
            f"address {address} is not public (loopback, private, link-local or reserved; "
            "set CQRS_WEBHOOKS_ALLOW_PRIVATE to allow)"
        )
    return None


async def resolved_problem(url: str, *, allow_private: bool) -> str | None:
    """:func:`url_problem`, then the same address rules for every address the URL's host
    resolves to now (an unresolvable host is left to the HTTP call to report)."""
    problem = url_problem(url, allow_private=allow_private)
    if problem is not None or allow_private:
        return problem
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(
            host, parts.port or (443 if parts.scheme == "https" else 80), type=socket.SOCK_STREAM
        )
    except OSError:
        return None
    for info in infos:
        found = address_problem(ipaddress.ip_address(info[4][0]))
        if found is not None:
            return f"host {host!r} resolves to {info[4][0]}: {found}"
    return None
