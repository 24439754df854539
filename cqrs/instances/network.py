"""Probing a host:port for PostgreSQL or Redis, and URL/port helpers.

Probes speak just enough of each wire protocol to tell "PostgreSQL/Redis is
here" from "something else holds the port", without needing credentials."""

from __future__ import annotations

import ipaddress
import socket
import struct
from enum import Enum
from typing import Protocol
from urllib.parse import SplitResult, urlsplit

# PostgreSQL answers this request with a single b"S" or b"N", before any authentication.
_SSL_REQUEST = struct.pack("!ii", 8, 80877103)


class Probe(Enum):
    """What a probe found at ``host:port``."""

    ANSWERS = "answers"  # the expected service replied
    CLOSED = "closed"  # nothing accepts connections there
    FOREIGN = "foreign"  # something accepted but did not reply like the service


def probe_postgres(host: str, port: int, timeout: float = 1.0) -> Probe:
    """Whether a PostgreSQL server listens at ``host:port``."""
    return _probe(host, port, timeout, _SSL_REQUEST, lambda reply: reply[:1] in (b"S", b"N"))


def probe_redis(host: str, port: int, timeout: float = 1.0) -> Probe:
    """Whether a Redis server listens at ``host:port`` (an auth error still counts)."""
    return _probe(host, port, timeout, b"PING\r\n", lambda r: r.startswith((b"+PONG", b"-")))


def _probe(host: str, port: int, timeout: float, hello: bytes, ok: _ReplyCheck) -> Probe:
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError:
        return Probe.CLOSED
    with sock:
        try:
            sock.sendall(hello)
            reply = sock.recv(64)
        except OSError:
            return Probe.FOREIGN
    return Probe.ANSWERS if reply and ok(reply) else Probe.FOREIGN


class _ReplyCheck(Protocol):
    def __call__(self, reply: bytes, /) -> bool: ...


def url_host_port(url: str, default_port: int) -> tuple[str, int]:
    """The host and port a URL names (``localhost`` and the default port if omitted)."""
    parts = urlsplit(url)
    return parts.hostname or "localhost", parts.port or default_port


def with_port(url: str, port: int) -> str:
    """``url`` with its port replaced, keeping user, password, path and query."""
    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    if ":" in host:
        host = f"[{host}]"
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@{host}:{port}" if userinfo else f"{host}:{port}"
    return SplitResult(parts.scheme, netloc, parts.path, parts.query, parts.fragment).geturl()


def is_local_host(host: str) -> bool:
    """True for names of this machine that a private instance can listen on."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind_address(host: str) -> str:
    """A numeric address for ``host`` (servers such as Redis do not resolve names)."""
    return "127.0.0.1" if host == "localhost" else host


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether nothing holds TCP ``port`` on ``host`` right now (it can be bound)."""
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now (the OS picks it)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((bind_address(host), 0))
        return int(sock.getsockname()[1])
