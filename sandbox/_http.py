"""The sandbox's HTTP/1.1 front: asyncio streams, keep-alive, ``Content-Length`` bodies."""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from http import HTTPStatus
from typing import Any

from sandbox._model import Answer, error
from sandbox._provider import Sandbox

log = logging.getLogger(__name__)

MAX_HEAD = 64 * 1024
_MAX_BODY = 1024 * 1024


class HttpFront:
    """Serves :class:`Sandbox`'s answers over HTTP, one connection task each."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closing = False  # set by close(): cancelled connections end quietly

    async def handle_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Serve one connection: requests one after another while it is kept alive."""
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        self._writers.add(writer)
        try:
            while await self._one_request(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # the client went away, or sent a head too large
        except ValueError:
            pass  # an unparseable request: nothing sensible to answer
        except asyncio.CancelledError:
            # close() ends the connections on shutdown. asyncio's stream callback (3.11)
            # logs a cancelled handler task as an ERROR with a traceback, so a reply in
            # flight at SIGTERM ends here as a normal return; any other cancel goes on.
            if not self._closing:
                raise
        finally:
            self._writers.discard(writer)
            if task is not None:
                self._tasks.discard(task)
            writer.close()

    async def _one_request(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        """Read and answer one request; False when the connection is to end."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            if exc.partial.strip():
                raise
            return False  # closed between requests
        lines = head.decode("latin-1").split("\r\n")
        method, target, version = lines[0].split(" ", 2)
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        tokens = headers.get("connection", "").lower()
        keep_alive = "close" not in tokens if version == "HTTP/1.1" else "keep-alive" in tokens
        if "transfer-encoding" in headers:
            await self._write(writer, error(411, "invalid_request_error", "Send Content-Length."))
            return False
        length = int(headers.get("content-length", "0") or 0)
        if length < 0 or length > _MAX_BODY:
            await self._write(writer, error(413, "invalid_request_error", "Body too large."))
            return False
        if length and headers.get("expect", "").lower() == "100-continue":
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        body = await reader.readexactly(length)
        api = target.startswith("/v1/") or target.startswith("/v1?")
        if api:
            self.sandbox.count("requests")
            if self.sandbox.behaviour.down:
                self.sandbox.count("dropped")
                return False  # a dead endpoint: no answer at all
            if self.sandbox.behaviour.latency_ms > 0:
                await asyncio.sleep(self.sandbox.behaviour.latency_ms / 1000)
        answer = (self.sandbox.faulty() if api else None) or self.sandbox.answer(
            method, target, headers, body
        )
        if api:
            log.debug("%s %s -> %d", method, target, answer.status)
            if self.sandbox.behaviour.reply_delay_ms > 0 and method == "POST":
                await asyncio.sleep(self.sandbox.behaviour.reply_delay_ms / 1000)
        echo = headers.get("idempotency-key")
        extra = (("Idempotency-Key", echo),) if echo is not None and api else ()
        await self._write(writer, answer, extra, keep_alive=keep_alive)
        return keep_alive

    @staticmethod
    async def _write(
        writer: asyncio.StreamWriter,
        answer: Answer,
        extra: tuple[tuple[str, str], ...] = (),
        *,
        keep_alive: bool = False,
    ) -> None:
        payload = json.dumps(answer.body, indent=2).encode() + b"\n"
        try:
            reason = HTTPStatus(answer.status).phrase
        except ValueError:
            reason = "Status"
        lines = [
            f"HTTP/1.1 {answer.status} {reason}",
            "Content-Type: application/json",
            f"Content-Length: {len(payload)}",
            f"Request-Id: req_{secrets.token_hex(8)}",
            *(f"{k}: {v}" for k, v in (*answer.headers, *extra)),
        ]
        if not keep_alive:
            lines.append("Connection: close")
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + payload)
        await writer.drain()

    async def close(self) -> None:
        """Drop every connection (in-flight requests included)."""
        self._closing = True
        for writer in list(self._writers):
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
