"""A real local HTTP/1.1 receiver for tests: an asyncio TCP server on 127.0.0.1 (port 0).

Tests start and stop it themselves::

    async with Receiver() as r:
        r.status(500, path="/hook")          # switch behaviour at any moment
        ... post to r.url("/hook") ...
        await r.wait_for(3, timeout=5)     # until three requests arrived
        assert r.requests[0].headers["idempotency-key"] == "k1"

It records every request (method, path, lower-cased headers, body, monotonic arrival time,
connection number) in ``requests`` and answers by the behaviour set for the request's path,
else the global one: :class:`Reply` (status, headers, body, optional delay), :class:`Hang`
(read the request, never answer until the receiver stops), :class:`Refuse` (close the
connection without answering), :class:`Flap` (fail the next K requests, then another
behaviour) or a callable of the request returning one of those (maybe awaitable).

It is a real TCP server, so a code under test in another process can post to it, and it
serves keep-alive connections (several requests per connection, Content-Length or chunked
bodies, ``Expect: 100-continue``) with any number in flight. It runs on the test's event loop:
a test that blocks the loop (``subprocess.run``, ``time.sleep``) stalls it.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import json
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from types import TracebackType
from typing import Any, TypeAlias

_MAX_HEAD = 64 * 1024


@dataclass(frozen=True, slots=True)
class ReceivedRequest:
    """One request as it arrived."""

    method: str
    target: str  # the raw request target, query included
    path: str  # the target without the query
    query: str
    headers: dict[str, str]  # lower-cased names; a repeated header keeps its last value
    body: bytes
    at: float  # time.monotonic() when the whole request had been read
    connection: int  # which TCP connection (1, 2, ...) carried it

    def json(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(self.body)


@dataclass(frozen=True, slots=True)
class Reply:
    """Answer with this status, headers and body, after ``delay_s``."""

    status: int = 200
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    delay_s: float = 0.0


@dataclass(frozen=True, slots=True)
class Hang:
    """Read the request and never answer (until the receiver stops)."""


@dataclass(frozen=True, slots=True)
class Refuse:
    """Read the request and close the connection without answering."""


@dataclass(slots=True)
class Flap:
    """Fail the next ``remaining`` requests with ``fail``, then behave like ``then``."""

    remaining: int
    fail: Reply = field(default_factory=lambda: Reply(500, b"flapping"))
    then: Reply | Hang | Refuse = field(default_factory=lambda: Reply(200, b"ok"))


Simple: TypeAlias = Reply | Hang | Refuse
Handler: TypeAlias = Callable[[ReceivedRequest], Simple | Awaitable[Simple]]
Behaviour: TypeAlias = Reply | Hang | Refuse | Flap | Handler

HEALTHY = Reply(200, b"ok")


class Receiver:
    """The server; use as ``async with Receiver() as r`` (or ``await start()``/``stop()``)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self._port = port
        self.requests: list[ReceivedRequest] = []
        self._default: Behaviour = HEALTHY
        self._by_path: dict[str, Behaviour] = {}
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._arrived = asyncio.Condition()
        self._stopping = asyncio.Event()
        self._connections = itertools.count(1)

    # -- life cycle ---------------------------------------------------------------------

    async def start(self) -> Receiver:
        """Listen (port 0: the OS picks one; see :attr:`port`)."""
        self._server = await asyncio.start_server(
            self._serve, self.host, self._port, limit=_MAX_HEAD
        )
        self._port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        """Stop listening and drop every connection (hanging ones included)."""
        self._stopping.set()
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> Receiver:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- addresses ----------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The port it listens on."""
        return self._port

    @property
    def host_key(self) -> str:
        """``host:port``, as the gateway labels this receiver."""
        return f"{self.host}:{self._port}"

    def url(self, path: str = "/") -> str:
        """``http://host:port/path``."""
        return f"http://{self.host}:{self._port}/{path.lstrip('/')}"

    # -- behaviour ----------------------------------------------------------------------

    def set(self, behaviour: Behaviour, path: str | None = None) -> None:
        """Answer requests to ``path`` (exact, without the query), or all others when None,
        with ``behaviour`` from now on."""
        if path is None:
            self._default = behaviour
        else:
            self._by_path["/" + path.lstrip("/")] = behaviour

    def healthy(self, status: int = 200, path: str | None = None) -> None:
        """Answer at once with ``status`` (200 or 204, say)."""
        self.set(Reply(status, b"" if status == 204 else b"ok"), path)

    def slow(self, delay_s: float, status: int = 200, path: str | None = None) -> None:
        """Answer ``status`` after ``delay_s`` seconds."""
        self.set(Reply(status, b"ok", delay_s=delay_s), path)

    def status(
        self,
        code: int,
        body: bytes = b"",
        headers: Mapping[str, str] | None = None,
        path: str | None = None,
    ) -> None:
        """Answer ``code`` (e.g. 500, 400, 410) with ``body`` and ``headers``."""
        self.set(Reply(code, body, tuple((headers or {}).items())), path)

    def hang(self, path: str | None = None) -> None:
        """Accept and never answer (until the receiver stops)."""
        self.set(Hang(), path)

    def too_many(
        self, retry_after: str | float, status: int = 429, path: str | None = None
    ) -> None:
        """Answer 429 (or 503) with ``Retry-After: retry_after``."""
        value = retry_after if isinstance(retry_after, str) else f"{retry_after:g}"
        self.set(Reply(status, b"slow down", (("Retry-After", value),)), path)

    def flapping(self, failures: int, status: int = 500, path: str | None = None) -> None:
        """Fail the next ``failures`` requests with ``status``, then answer 200."""
        self.set(Flap(failures, Reply(status, b"flapping")), path)

    def refuse(self, path: str | None = None) -> None:
        """Close the connection without answering."""
        self.set(Refuse(), path)

    def reset(self) -> None:
        """Healthy everywhere again (the recorded requests stay)."""
        self._default = HEALTHY
        self._by_path.clear()

    # -- what arrived -------------------------------------------------------------------

    def requests_to(self, path: str) -> list[ReceivedRequest]:
        """The requests to ``path`` (without the query), in arrival order."""
        wanted = "/" + path.lstrip("/")
        return [r for r in self.requests if r.path == wanted]

    def clear(self) -> None:
        """Forget the recorded requests."""
        self.requests.clear()

    async def wait_for(
        # `timeout` (not timeout_s): the name tests call it by, as in asyncio.wait_for.
        self,
        count: int,
        timeout: float = 5.0,  # noqa: ASYNC109
        path: str | None = None,
    ) -> list[ReceivedRequest]:
        """Wait until ``count`` requests (to ``path``, when given) have arrived; returns them.
        TimeoutError after ``timeout`` seconds."""

        def seen() -> list[ReceivedRequest]:
            return self.requests if path is None else self.requests_to(path)

        try:
            async with asyncio.timeout(timeout), self._arrived:
                await self._arrived.wait_for(lambda: len(seen()) >= count)
        except TimeoutError:
            raise TimeoutError(
                f"{len(seen())} of {count} requests arrived within {timeout} s"
            ) from None
        return list(seen())

    # -- serving ------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        connection = next(self._connections)
        try:
            while not self._stopping.is_set():
                request, keep_alive = await self._read(reader, writer, connection)
                if request is None:
                    return
                self.requests.append(request)
                async with self._arrived:
                    self._arrived.notify_all()
                if not await self._answer(request, writer) or not keep_alive:
                    return
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            return
        except ValueError:  # unparseable request: drop the connection
            return
        except asyncio.CancelledError:  # stop(): quietly
            return
        finally:
            self._tasks.discard(task)
            self._writers.discard(writer)
            writer.close()

    async def _read(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, connection: int
    ) -> tuple[ReceivedRequest | None, bool]:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            if exc.partial.strip():
                raise
            return None, False  # the client closed between requests
        lines = head.decode("latin-1").split("\r\n")
        method, target, version = lines[0].split(" ", 2)
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        if headers.get("expect", "").lower() == "100-continue":
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            await writer.drain()
        if "chunked" in headers.get("transfer-encoding", "").lower():
            body = await _read_chunked(reader)
        else:
            body = await reader.readexactly(int(headers.get("content-length", "0") or 0))
        tokens = headers.get("connection", "").lower()
        keep_alive = (
            "close" not in tokens if version.upper() == "HTTP/1.1" else "keep-alive" in tokens
        )
        path, _, query = target.partition("?")
        request = ReceivedRequest(
            method, target, path, query, headers, body, time.monotonic(), connection
        )
        return request, keep_alive

    def _behaviour(self, path: str) -> Behaviour:
        return self._by_path.get(path, self._default)

    async def _answer(self, request: ReceivedRequest, writer: asyncio.StreamWriter) -> bool:
        """Answer one request; False when the connection must end."""
        behaviour = self._behaviour(request.path)
        if isinstance(behaviour, Flap):
            if behaviour.remaining > 0:
                behaviour.remaining -= 1
                chosen: Simple = behaviour.fail
            else:
                chosen = behaviour.then
        elif isinstance(behaviour, Reply | Hang | Refuse):
            chosen = behaviour
        else:
            produced = behaviour(request)
            chosen = await produced if inspect.isawaitable(produced) else produced
        if isinstance(chosen, Hang):
            await self._stopping.wait()
            return False
        if isinstance(chosen, Refuse):
            return False
        if chosen.delay_s > 0:
            await asyncio.sleep(chosen.delay_s)
        writer.write(_response(chosen, head_only=request.method == "HEAD"))
        await writer.drain()
        return not any(
            k.lower() == "connection" and v.lower() == "close" for k, v in chosen.headers
        )


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts: list[bytes] = []
    while True:
        size_line = await reader.readuntil(b"\r\n")
        size = int(size_line.split(b";", 1)[0].strip(), 16)
        if size == 0:
            # trailers, up to the empty line
            while (await reader.readuntil(b"\r\n")) != b"\r\n":
                pass
            return b"".join(parts)
        parts.append(await reader.readexactly(size))
        await reader.readexactly(2)


def _response(reply: Reply, *, head_only: bool) -> bytes:
    try:
        reason = HTTPStatus(reply.status).phrase
    except ValueError:
        reason = "Status"
    lines = [f"HTTP/1.1 {reply.status} {reason}"]
    names = {k.lower() for k, _ in reply.headers}
    no_body = reply.status in (204, 304) or 100 <= reply.status < 200
    if "content-length" not in names and not no_body:
        lines.append(f"Content-Length: {len(reply.body)}")
    if "content-type" not in names and not no_body:
        lines.append("Content-Type: text/plain")
    lines.extend(f"{k}: {v}" for k, v in reply.headers)
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head if head_only or no_body else head + reply.body


def headers_of(requests: Iterable[ReceivedRequest], name: str) -> list[str | None]:
    """The value of header ``name`` (any case) in each request."""
    return [r.headers.get(name.lower()) for r in requests]
