"""What one history or time-travel call may cost the read server.

- A ``GetAggregateHistory`` page ends before its encoded size would pass
  ``page_max_bytes`` (a page of a thousand large events would pass a default
  client's 4 MB receive limit), and is read from the table a few rows at a time.
- A ``Get*AsOf`` call replays at most ``as_of_max_events`` events per aggregate:
  beyond that it is FAILED_PRECONDITION (retrying cannot help: the history only
  grows), so the CPU time of a call is bounded.
- At most ``as_of_concurrency`` replays run at once per process (each holds a
  database connection in a transaction); the others wait for a turn as long as they
  would wait for a consistency token, then RESOURCE_EXHAUSTED (retry later).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from common.errors import ResourceExhausted
from common.settings import Settings

DEFAULT_PAGE_MAX_BYTES = 1024 * 1024
DEFAULT_AS_OF_MAX_EVENTS = 50_000
DEFAULT_AS_OF_CONCURRENCY = 2


class HistoryLimits:
    """The bounds above, and the turns of replays of one process (0 turns a bound off)."""

    def __init__(
        self,
        page_max_bytes: int = DEFAULT_PAGE_MAX_BYTES,
        as_of_max_events: int = DEFAULT_AS_OF_MAX_EVENTS,
        as_of_concurrency: int = DEFAULT_AS_OF_CONCURRENCY,
    ) -> None:
        self.page_max_bytes = page_max_bytes
        self.as_of_max_events = as_of_max_events
        self.as_of_concurrency = as_of_concurrency
        self._turns = asyncio.Semaphore(as_of_concurrency) if as_of_concurrency > 0 else None

    @classmethod
    def from_settings(cls, settings: Settings) -> HistoryLimits:
        return cls(
            settings.history_page_max_bytes, settings.as_of_max_events, settings.as_of_concurrency
        )

    @asynccontextmanager
    async def replay_turn(self, wait_s: float) -> AsyncIterator[None]:
        """Run the body as one of at most ``as_of_concurrency`` replays; waits at most
        ``wait_s`` for a turn, then :class:`ResourceExhausted`."""
        turns = self._turns
        if turns is None:
            yield
            return
        try:
            async with asyncio.timeout(wait_s):
                await turns.acquire()
        except TimeoutError:
            raise ResourceExhausted(
                f"too many time-travel calls in progress (at most {self.as_of_concurrency}"
                " at once); retry later"
            ) from None
        try:
            yield
        finally:
            turns.release()
