"""Which URLs a webhook may be delivered to: the server-side request forgery guard.

A webhook makes *our* servers send requests to an address a client chose, so by default
only public http(s) destinations are accepted: no loopback, private, link-local
(169.254.0.0/16 and fe80::/10, where cloud metadata services live), unique-local,
multicast, reserved or unspecified address, no well-known metadata host name, no
credentials in the URL. ``CQRS_WEBHOOKS_ALLOW_PRIVATE`` lifts the address rules (tests and
local development deliver to 127.0.0.1).

The URL is read with the parser the HTTP client uses (``httpx.URL``), so a URL accepted
here is one the client can send to; the host must then be a plain DNS name or an IP
address. An IPv4 address is recognised in every spelling the system resolver accepts
(``socket.inet_aton``: ``2130706433``, ``0x7f.1``, ``127.1``, ``0``), and an IPv6
address that carries an IPv4 one (mapped, compatible, SIIT, NAT64, 6to4, Teredo) is
judged by that IPv4 address as well.

The rules are applied twice: to the URL when a subscription is created (:func:`url_problem`:
literal addresses and names), and to every address the host name resolves to at each
delivery (:func:`address_problem`, through the gateway's vetting of the one lookup it
connects with; see :mod:`common.gateway`), so a name that later resolves to a private
address (DNS rebinding) is refused too.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import unicodedata
from collections.abc import Callable

import httpx

MAX_URL = 2048
_METADATA_HOSTS = frozenset(
    {"metadata", "metadata.google.internal", "metadata.goog", "instance-data", "localhost"}
)
# One DNS label (after IDNA): letters, digits, hyphens (underscores appear in real names).
_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")
# A last label that a resolver reads as a number (WHATWG: "ends in a number"): the host is an
# IPv4 address in some spelling, never a name.
_NUMERIC = re.compile(r"(?:0x[0-9a-f]*|[0-9]+)")
_ALLOW_HINT = "set CQRS_WEBHOOKS_ALLOW_PRIVATE to allow"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
AddressVetter = Callable[[IPAddress], "str | None"]

# IPv6 prefixes that carry an IPv4 address in their last 32 bits (besides ::ffff:0:0/96,
# 2002::/16 and Teredo, which ipaddress knows): IPv4-compatible (deprecated), SIIT
# "IPv4-translated", and the NAT64 well-known prefix.
_IPV4_IN_LAST_32 = tuple(
    ipaddress.ip_network(n) for n in ("::/96", "::ffff:0:0:0/96", "64:ff9b::/96")
)
# Never a public destination, whatever Python's tables say (3.11 calls them global):
# NAT64 local-use (RFC 8215).
_NEVER_PUBLIC = (ipaddress.ip_network("64:ff9b:1::/48"),)


def url_problem(url: str, *, allow_private: bool) -> str | None:
    """Why ``url`` cannot be a webhook endpoint, or ``None`` if it can."""
    if len(url) > MAX_URL:
        return f"must be at most {MAX_URL} characters"
    for char in url:
        if char.isspace() or unicodedata.category(char) in ("Cc", "Cf", "Cs", "Co", "Cn"):
            return f"must not contain whitespace or control characters (found {char!r})"
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        return f"is not a valid URL ({exc})"
    if parsed.scheme not in ("http", "https") or not url.lower().startswith(parsed.scheme + "://"):
        return "must be an http:// or https:// URL"
    if parsed.userinfo:
        return "must not carry credentials (put them in the endpoint's own check of the signature)"
    if parsed.port is not None and not 0 < parsed.port < 65536:
        return "must use a port from 1 to 65535"
    if parsed.fragment or "#" in url:
        return "must not have a #fragment"
    host = parsed.raw_host.decode("ascii").lower()
    if not host:
        return "must name a host"
    if ":" in host:  # an IPv6 literal (httpx checked its syntax)
        return _ipv6_literal_problem(host, allow_private)
    name = host[:-1] if host.endswith(".") else host
    labels = name.split(".")
    if _NUMERIC.fullmatch(labels[-1]):
        return _ipv4_literal_problem(host, name, allow_private)
    if len(name) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        return f"host {host!r} is not a valid DNS name"
    if allow_private:
        return None
    if name in _METADATA_HOSTS or name.endswith(".localhost"):
        return f"host {host!r} is a local or metadata name ({_ALLOW_HINT})"
    return None  # a name: its addresses are vetted at every delivery


def _ipv4_literal_problem(host: str, name: str, allow_private: bool) -> str | None:
    """An IPv4 address, maybe in a legacy spelling the resolver would still accept."""
    try:
        address = ipaddress.IPv4Address(socket.inet_aton(name))
    except OSError:
        return f"host {host!r} looks like an IPv4 address but is not one"
    if allow_private:
        return None
    if name != str(address):
        # Only ever written this way to slip past a check: the dotted quad is the address.
        return (
            f"host {host!r} is the IPv4 address {address} in another spelling; "
            "write a host name or the dotted-quad address"
        )
    return address_problem(address)


def _ipv6_literal_problem(host: str, allow_private: bool) -> str | None:
    if "%" in host:
        return None if allow_private else f"host {host!r}: no IPv6 zone ({_ALLOW_HINT})"
    try:
        address = ipaddress.IPv6Address(host)
    except ValueError:
        return f"host {host!r} is not a valid IPv6 address"
    return None if allow_private else address_problem(address)


def embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (and may be translated to on the way), if
    any: IPv4-mapped, IPv4-compatible, SIIT, NAT64 (64:ff9b::/96), 6to4, Teredo client."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    for network in _IPV4_IN_LAST_32:
        if address in network:
            return ipaddress.IPv4Address(address.packed[12:])
    return None


def address_problem(address: IPAddress) -> str | None:
    """Why a delivery must not go to ``address`` (without ALLOW_PRIVATE), or ``None``."""
    candidates: list[IPAddress] = [address]
    if isinstance(address, ipaddress.IPv6Address):
        if any(address in network for network in _NEVER_PUBLIC):
            return f"address {address} is not public (NAT64 local use; {_ALLOW_HINT})"
        inner = embedded_ipv4(address)
        if inner is not None:
            candidates.append(inner)
    for candidate in candidates:
        if not candidate.is_global or candidate.is_multicast:
            seen = f"{address} (carrying {candidate})" if candidate is not address else address
            return (
                f"address {seen} is not public (loopback, private, link-local or reserved; "
                f"{_ALLOW_HINT})"
            )
    return None


def delivery_vetter(*, allow_private: bool) -> AddressVetter:
    """What the webhook gateway checks each resolved address with: :func:`address_problem`,
    or nothing when private addresses are allowed."""
    return _accept if allow_private else address_problem


def _accept(_: IPAddress) -> str | None:
    return None
