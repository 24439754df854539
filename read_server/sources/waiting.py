"""Waiting for a projection to reach a consistency token's position.

An attempt (a source's read) answers, or says the projection is :data:`BEHIND` the
token, or that it is :class:`NotReady` at all (being built, lost). Without a token
a projection that is not ready is UNAVAILABLE at once; with one, it is waited for
like one that is behind (a projection being rebuilt will get there), within the
request's budget, after which the answer is UNAVAILABLE.

Waiting is shared: a :class:`CheckpointWatch` keeps one poller per projection that
reads its checkpoint while anyone waits and wakes the waiters it has reached, so a
thousand waiting requests cost one small query per poll, not a thousand reads.
After the wake-up the request reads again (the read itself re-checks the token). The
near-cache's change feed also reports checkpoints as it hears them (:meth:`advanced`),
which wakes waiters as soon as the projector's message arrives.

Before the first wait, a token is checked against the log's head (``check_head``, see
:mod:`read_server.sources.head`): one from the future is INVALID_ARGUMENT at once
instead of a wait that can only end UNAVAILABLE. A token already reached costs nothing.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal, TypeVar

from common.cancellation import raise_if_cancelled
from common.errors import Unavailable
from common.positions import Position
from read_server.sources.base import Freshness

T = TypeVar("T")

# While anyone waits, each projection's checkpoint is read this often (seconds).
POLL_INTERVAL_S = 0.01


class Behind(enum.Enum):
    """Returned by an attempt whose projection has not reached the position yet."""

    BEHIND = enum.auto()


BEHIND = Behind.BEHIND


@dataclass(frozen=True, slots=True)
class NotReady:
    """Returned by an attempt whose projection cannot answer at all; ``why`` completes
    "projection <name> ...", e.g. "is being rebuilt from the event log"."""

    why: str


Pending = Literal[Behind.BEHIND] | NotReady
# Reads a projection's checkpoint (``None``: it has none now).
CheckpointReader = Callable[[str], Awaitable[Position | None]]
# Raises InvalidArgument for a position no command can have written.
HeadCheck = Callable[[Position], Awaitable[None]]


def not_caught_up(projection: str, freshness: Freshness) -> Unavailable:
    waited_ms = max(0, round(freshness.max_wait_s * 1000))
    return Unavailable(
        f"projection {projection} has not caught up with the consistency token"
        f" within {waited_ms} ms"
    )


class CheckpointWatch:
    """Shared waiting for projection checkpoints; one per source (and process)."""

    def __init__(
        self, read_checkpoint: CheckpointReader, check_head: HeadCheck | None = None
    ) -> None:
        self._read = read_checkpoint
        self._check_head = check_head
        self._waiters: dict[str, list[tuple[Position, asyncio.Future[None]]]] = {}
        self._pollers: dict[str, asyncio.Task[None]] = {}

    async def until_fresh(
        self,
        projection: str,
        freshness: Freshness,
        attempt: Callable[[], Awaitable[T | Pending]],
    ) -> T:
        """Call ``attempt``; while it is pending, wait for the projection's checkpoint to
        reach the token and try again, until ``freshness.max_wait_s`` is spent (never
        giving up before the first attempt)."""
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + freshness.max_wait_s
        result = await attempt()
        if not isinstance(result, Behind | NotReady):
            return result
        position = freshness.position
        if position is None:
            assert isinstance(result, NotReady)  # without a token nothing is "behind"
            raise Unavailable(f"projection {projection} {result.why}")
        budget = asyncio.timeout_at(give_up_at)
        try:
            async with budget:
                if self._check_head is not None:
                    await self._check_head(position)
                while True:
                    raise_if_cancelled()  # the budget's own cancel, if Redis swallowed it
                    await self._reached(projection, position)
                    result = await attempt()
                    if not isinstance(result, Behind | NotReady):
                        return result
                    await asyncio.sleep(POLL_INTERVAL_S)  # e.g. a generation just switched
        except TimeoutError:
            if not budget.expired():
                raise  # the store's own timeout, not the budget
        if isinstance(result, NotReady):
            waited_ms = max(0, round(freshness.max_wait_s * 1000))
            raise Unavailable(
                f"projection {projection} {result.why} (waited {waited_ms} ms for the token)"
            )
        raise not_caught_up(projection, freshness)

    def advanced(self, projection: str, checkpoint: Position) -> None:
        """Someone saw ``projection`` reach ``checkpoint`` (e.g. the change feed): wake the
        waiters it satisfies now, without waiting for the next poll."""
        for position, waiter in list(self._waiters.get(projection, ())):
            if checkpoint >= position and not waiter.done():
                waiter.set_result(None)

    async def _reached(self, projection: str, position: Position) -> None:
        """Until the shared poller sees ``projection`` at ``position`` or beyond."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiters = self._waiters.setdefault(projection, [])
        entry = (position, waiter)
        waiters.append(entry)
        poller = self._pollers.get(projection)
        if poller is None or poller.done():
            self._pollers[projection] = asyncio.create_task(
                self._poll(projection), name=f"watch-{projection}"
            )
        try:
            await waiter
        finally:
            if entry in waiters:
                waiters.remove(entry)

    async def _poll(self, projection: str) -> None:
        waiters = self._waiters[projection]
        while waiters:
            try:
                checkpoint = await self._read(projection)
            except Exception:  # an outage: the waiters' own reads will say so
                checkpoint = None
            if checkpoint is not None:
                self.advanced(projection, checkpoint)
            await asyncio.sleep(POLL_INTERVAL_S)
