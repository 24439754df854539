"""Noticing a cancellation that a library swallowed.

On Python 3.11, ``asyncio.wait_for`` (which redis-py uses to send commands) returns
normally when a cancellation arrives just as the awaited call completes, swallowing
it; the task then runs on as if never cancelled, and whoever awaits it (a
``TaskGroup``, a ``close()``) waits for ever. Every loop that awaits Redis calls
:func:`raise_if_cancelled` at each turn: a task whose cancellation was requested
stops there (``Task.cancelling()`` still counts the request).
"""

from __future__ import annotations

import asyncio
import contextlib


def raise_if_cancelled() -> None:
    """Raise ``CancelledError`` if this task's cancellation was requested (and swallowed)."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def cancel_and_wait(task: asyncio.Task[object] | None) -> None:
    """Cancel a background task (if any) and wait until it has ended."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
