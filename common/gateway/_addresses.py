"""Resolve once, vet every address, connect to a vetted one: the DNS-rebinding guard.

A check that resolves a name and a connection that resolves it again can be told two
different things by the name's DNS server (public to the check, 127.0.0.1 to the
connection). :class:`VettingBackend` is the network backend of the gateway's HTTP pool: it
resolves the host of each new connection exactly once, refuses the connection when the
lookup fails or when *any* address it returned is refused by the policy, and otherwise
connects to one of those addresses (never to the name). The HTTP layer above it still
knows the original name: the ``Host`` header, TLS SNI and the certificate check all use it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import select
import socket
import typing
from collections.abc import Awaitable, Callable, Iterable, Sequence

import httpcore

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# host, port -> the IP addresses (as text) to try, in order; OSError when it cannot resolve.
Resolver = Callable[[str, int], Awaitable[Sequence[str]]]
# An address -> why the gateway must not connect to it, or None.
AddressVetter = Callable[[IPAddress], "str | None"]


class AddressRefused(Exception):
    """Raised by the backend instead of connecting (the gateway turns it into
    :class:`~common.gateway.errors.Refused`). ``lookup``: the name did not resolve (that may
    pass); otherwise an address was refused by the policy (it will not)."""

    def __init__(self, host: str, reason: str, *, lookup: bool) -> None:
        super().__init__(reason)
        self.host = host
        self.reason = reason
        self.lookup = lookup


async def system_resolver(host: str, port: int) -> list[str]:
    """The system's resolver (``getaddrinfo``, run off the event loop): distinct addresses
    in the order it answered."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class VettingBackend(httpcore.AsyncNetworkBackend):
    """An httpcore network backend that connects only to vetted addresses of one lookup."""

    def __init__(
        self,
        vet: AddressVetter,
        resolver: Resolver | None = None,
        inner: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        self._vet = vet
        self._resolve = resolver or system_resolver
        self._inner = inner or httpcore.AnyIOBackend()

    async def vetted(self, host: str, port: int) -> list[str]:
        """The addresses of ``host`` to connect to; AddressRefused if there are none, or if
        any of them is refused."""
        try:
            found = list(await self._resolve(host, port))
        except OSError as exc:
            raise AddressRefused(host, f"lookup of {host!r} failed ({exc})", lookup=True) from exc
        if not found:
            raise AddressRefused(host, f"lookup of {host!r} found no address", lookup=True)
        for text in found:
            try:
                address = ipaddress.ip_address(text)
            except ValueError:
                raise AddressRefused(
                    host, f"{host!r} resolved to {text!r}, not an IP address", lookup=False
                ) from None
            problem = self._vet(address)
            if problem is not None:
                # One bad answer refuses the name: the next lookup may prefer that one.
                raise AddressRefused(host, f"{host!r} resolves to {text}: {problem}", lookup=False)
        return found

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's port
        local_address: str | None = None,
        socket_options: Iterable[typing.Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        """Connect to the first vetted address of ``host`` that accepts (the name itself is
        never handed to the layer below, which would resolve it again)."""
        addresses = await self.vetted(host, port)
        last: Exception | None = None
        for address in addresses:
            try:
                stream = await self._inner.connect_tcp(
                    address,
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
                return _QuickStream(stream)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        assert last is not None
        raise last

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's port
        socket_options: Iterable[typing.Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        """Not used by the gateway: a Unix socket has no address to vet."""
        raise AddressRefused(path, "unix sockets are not vetted: refused", lookup=False)

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class _QuickStream(httpcore.AsyncNetworkStream):
    """A connection's stream, answering "is it readable?" from its socket looked up once.

    httpcore asks that of every idle connection in the pool each time it assigns a request
    (to drop connections the server closed), and the anyio stream below builds a mapping of
    all its attributes to answer: with tens of connections that was most of the webhook
    dispatcher's CPU at a few hundred deliveries a second. Everything else is the inner
    stream's.
    """

    def __init__(self, inner: httpcore.AsyncNetworkStream) -> None:
        self._inner = inner
        self._socket: socket.socket | None = inner.get_extra_info("socket")

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:  # noqa: ASYNC109
        return await self._inner.read(max_bytes, timeout)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:  # noqa: ASYNC109
        await self._inner.write(buffer, timeout)

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def start_tls(
        self,
        ssl_context: typing.Any,
        server_hostname: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's port
    ) -> httpcore.AsyncNetworkStream:
        return _QuickStream(await self._inner.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> typing.Any:
        if info == "is_readable" and self._socket is not None:
            return _readable(self._socket)
        return self._inner.get_extra_info(info)


def _readable(sock: socket.socket) -> bool:
    """Whether a read would return at once (data, or the b"" of a closed connection); a
    socket without a descriptor any more counts as readable, as in httpcore."""
    fd = sock.fileno()
    if fd < 0:
        return True
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(0))
