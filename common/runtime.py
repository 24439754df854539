"""How a long-running process drives its event loop.

uvloop (libuv under asyncio) makes every await cheaper; the servers and the projector spend
much of their time in loop turns and socket I/O, so they run on it when it is installed. It
is a dependency on Linux and macOS; elsewhere the standard loop is used, with the same code.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

# Young collections after this many net container allocations instead of 700: a projector
# allocates a few objects per event and reference counting frees nearly all of them, yet
# the cycle collector ran 1,300-1,400 times in a rebuild of the demo log and took 0.50-0.86
# s of its 6-10 s of CPU (gc.callbacks, 20 runs); with these and start-up frozen, 0.04-0.06 s.
_COLLECT_EVERY = (50_000, 20, 20)


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


def collect_less() -> None:
    """Fewer, cheaper cycle collections for a process that churns through short-lived
    objects: what start-up made (modules, descriptors, pools) is frozen out of every later
    collection, and a young collection waits for ``_COLLECT_EVERY[0]`` net allocations."""
    gc.freeze()
    gc.set_threshold(*_COLLECT_EVERY)
