"""A webhook receiver for the outbound benchmark: an asyncio HTTP/1.1 server on 127.0.0.1.

It answers every request ``200 ok`` after ``delay_s`` (or never, ``delay_s`` None: a dead
endpoint that accepts and holds the request), serves keep-alive connections with any
number of requests in flight, and records each request's arrival (``time.monotonic()``
when its body had been read) and body. Nothing is parsed while it serves: the benchmark
reads the bodies afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import Any

_MAX_HEAD = 64 * 1024
_OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"


@dataclass(frozen=True, slots=True)
class Arrival:
    at: float  # time.monotonic() when the whole request had been read
    body: bytes


class Receiver:
    """``async with Receiver(0.05) as r``: ``r.url`` takes POSTs; ``r.arrivals`` fills."""

    def __init__(self, delay_s: float | None) -> None:
        self.delay_s = delay_s
        self.arrivals: list[Arrival] = []
        self.url = ""
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    async def __aenter__(self) -> Receiver:
        self._server = await asyncio.start_server(
            self._serve, "127.0.0.1", 0, limit=_MAX_HEAD, backlog=1024
        )
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/hook"
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value.strip())
                body = await reader.readexactly(length)
                self.arrivals.append(Arrival(time.monotonic(), body))
                if self.delay_s is None:
                    await asyncio.Event().wait()  # hold it until the receiver stops
                if self.delay_s:
                    await asyncio.sleep(self.delay_s)
                writer.write(_OK)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        except asyncio.CancelledError:
            pass
        finally:
            self._tasks.discard(task)
            with contextlib.suppress(Exception):
                writer.close()
