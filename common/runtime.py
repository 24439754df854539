"""How a long-running process drives its event loop.

uvloop (libuv under asyncio) makes every await cheaper; the servers and the projector spend
much of their time in loop turns and socket I/O, so they run on it when it is installed. It
is a dependency on Linux and macOS; elsewhere the standard loop is used, with the same code.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` on uvloop when available: the one way a process starts its loop."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is installed wherever it builds
        return asyncio.run(main)
    return uvloop.run(main)


def loop_name() -> str:
    """The running loop's implementation, for logs and the bench's machine facts."""
    loop = asyncio.get_running_loop()
    return f"{type(loop).__module__}.{type(loop).__name__}"
