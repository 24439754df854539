"""Hostile HTTP receivers for tests: real asyncio TCP servers on 127.0.0.1 (port 0) that
answer in ways a polite receiver (tests/support/http_receiver.py) never does.

- :func:`huge_body`: a 200 with a body of ``size`` bytes (or endless, chunked), written as
  fast as the client reads it;
- :func:`drip`: the answer one byte at a time, every ``every_s`` seconds, in the head (a
  slowloris) or in the body;
- :func:`status` (a whole answer at once, for TLS tests).

Each connection is recorded in :attr:`HostileServer.connections`: the request's head and
``Host`` header, how many bytes of the answer the server managed to write (the client's
socket buffers and what it read), and when the client dropped the connection — the
measure of what a client under test let a receiver push into it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType

_CHUNK_SIZE = 65536


@dataclass(slots=True)
class Connection:
    """One TCP connection as the server saw it."""

    number: int
    head: str = ""
    host: str = ""
    body: bytes = b""
    sent: int = 0  # bytes of the answer written (flushed to the socket)
    opened_at: float = field(default_factory=time.monotonic)
    closed_at: float | None = None  # when the client dropped it (or the answer ended)


Answer = Callable[[Connection, asyncio.StreamWriter], Awaitable[None]]


def huge_body(size: int | None, status: int = 200, fill: bytes = b"\0") -> Answer:
    """``size`` bytes of ``fill`` after the head (Content-Length), or an endless chunked body
    when ``size`` is None, written as fast as the client takes them."""
    chunk = fill * (_CHUNK_SIZE // len(fill))

    async def answer(conn: Connection, writer: asyncio.StreamWriter) -> None:
        framing = "Transfer-Encoding: chunked" if size is None else f"Content-Length: {size}"
        await _write(conn, writer, f"HTTP/1.1 {status} X\r\n{framing}\r\n\r\n".encode())
        left = size
        while left is None or left > 0:
            piece = chunk if left is None else chunk[: min(left, len(chunk))]
            data = b"%x\r\n%s\r\n" % (len(piece), piece) if size is None else piece
            await _write(conn, writer, data)
            if left is not None:
                left -= len(piece)

    return answer


def drip(every_s: float, *, in_head: bool = False, total: int = 100_000) -> Answer:
    """A 200 dripped one byte every ``every_s`` seconds: the head itself (``in_head``) or,
    after a prompt head, a body of ``total`` bytes."""

    async def answer(conn: Connection, writer: asyncio.StreamWriter) -> None:
        head = f"HTTP/1.1 200 OK\r\nContent-Length: {total}\r\nX-Pad: {'p' * 64}\r\n\r\n"
        if in_head:
            for byte in head.encode():
                await _write(conn, writer, bytes([byte]))
                await asyncio.sleep(every_s)
        else:
            await _write(conn, writer, head.encode())
        for _ in range(total):
            await _write(conn, writer, b"x")
            await asyncio.sleep(every_s)

    return answer


def status(code: int, body: bytes = b"ok") -> Answer:
    """A whole, ordinary answer at once."""

    async def answer(conn: Connection, writer: asyncio.StreamWriter) -> None:
        head = f"HTTP/1.1 {code} X\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        await _write(conn, writer, head.encode() + body)

    return answer


async def _write(conn: Connection, writer: asyncio.StreamWriter, data: bytes) -> None:
    writer.write(data)
    await writer.drain()
    conn.sent += len(data)


class HostileServer:
    """``async with HostileServer(answer) as s``: every request gets ``answer``."""

    def __init__(
        self,
        answer: Answer,
        host: str = "127.0.0.1",
        port: int = 0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.answer = answer
        self.host = host
        self._port = port
        self._ssl = ssl_context
        self.connections: list[Connection] = []
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        return self._port

    def url(self, path: str = "/", host: str | None = None, scheme: str = "http") -> str:
        return f"{scheme}://{host or self.host}:{self._port}/{path.lstrip('/')}"

    async def __aenter__(self) -> HostileServer:
        self._server = await asyncio.start_server(self._serve, self.host, self._port, ssl=self._ssl)
        self._port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def wait_closed(self, count: int = 1, timeout_s: float = 10.0) -> list[Connection]:
        """Until ``count`` connections were dropped; returns them."""
        async with asyncio.timeout(timeout_s):
            while True:
                done = [c for c in self.connections if c.closed_at is not None]
                if len(done) >= count:
                    return done
                await asyncio.sleep(0.02)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        conn = Connection(len(self.connections) + 1)
        self.connections.append(conn)
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            conn.head = head
            headers = {
                k.strip().lower(): v.strip()
                for k, _, v in (line.partition(":") for line in head.split("\r\n")[1:] if line)
            }
            conn.host = headers.get("host", "")
            conn.body = await reader.readexactly(int(headers.get("content-length", "0") or 0))
            await self.answer(conn, writer)
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError, OSError):
            pass  # the client dropped the connection: what the tests look for
        except asyncio.CancelledError:  # the server stops: quietly
            pass
        finally:
            conn.closed_at = time.monotonic()
            self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
