"""Gets by id that arrive together, answered by one query.

Under load the read server receives many gets in one turn of the event loop. For a read
model, whose rows hold their documents' bytes, a get is "the bytes of this id": the gets
of one turn are collected and answered by one ``WHERE id = ANY($1)`` statement, each from
its own row, instead of one pooled round trip each (the pool's acquire and release and
asyncpg's per-statement work were most of a get's CPU). A lone get waits for one turn of
the loop more than it would have; a failed statement fails every get of its batch with
the same error; a get whose caller went away is simply not answered.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

Fetch = Callable[[list[uuid.UUID]], Awaitable[Sequence[Mapping[str, Any]]]]


class GetBatcher:
    """Collects gets while ``in_flight`` statements are running and answers them with the
    next one; ``fetch`` reads the rows of many ids (each with ``id``), ``document`` makes
    a row into the answer."""

    def __init__(
        self,
        fetch: Fetch,
        document: Callable[[Mapping[str, Any]], bytes],
        in_flight: int = 1,
    ) -> None:
        self._fetch = fetch
        self._document = document
        self._limit = in_flight
        self._running = 0
        self._waiting: dict[str, list[asyncio.Future[bytes | None]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def get(self, ident: str) -> bytes | None:
        """The document of ``ident`` (a canonical UUID; ``None``: no row), read with the
        gets that came while the statements before it ran."""
        answer: asyncio.Future[bytes | None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(ident, []).append(answer)
        if self._running < self._limit:
            self._start()
        return await answer

    def _start(self) -> None:
        batch, self._waiting = self._waiting, {}
        self._running += 1
        task = asyncio.get_running_loop().create_task(self._answer(batch))
        self._tasks.add(task)  # held until done, so it is not collected mid-flight
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._running -= 1
        if self._waiting:
            self._start()

    async def _answer(self, batch: dict[str, list[asyncio.Future[bytes | None]]]) -> None:
        try:
            rows = await self._fetch([uuid.UUID(ident) for ident in batch])
        except BaseException as exc:
            for answers in batch.values():
                for answer in answers:
                    if not answer.done():
                        answer.set_exception(exc)
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        found = {str(row["id"]): self._document(row) for row in rows}
        for ident, answers in batch.items():
            for answer in answers:
                if not answer.done():
                    answer.set_result(found.get(ident))
