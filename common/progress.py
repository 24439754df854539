"""A dependency-free progress bar for long CLI tasks (seed, rebuild), on stderr."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """``Progress(total, "label")``; call ``advance(n)``; ``close()`` prints the summary."""

    def __init__(self, total: int, label: str, stream: TextIO | None = None) -> None:
        self.total = max(total, 0)
        self.label = label
        self.done = 0
        self._stream = stream or sys.stderr
        self._started = time.monotonic()
        self._last_draw = 0.0
        self._tty = self._stream.isatty()

    def advance(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if now - self._last_draw >= (0.1 if self._tty else 2.0):
            self._last_draw = now
            self._draw(final=False)

    def close(self) -> None:
        self._draw(final=True)

    def _draw(self, final: bool) -> None:
        elapsed = max(time.monotonic() - self._started, 1e-9)
        rate = self.done / elapsed
        fraction = self.done / self.total if self.total else 1.0
        width = 30
        filled = int(width * min(fraction, 1.0))
        bar = "#" * filled + "-" * (width - filled)
        line = (
            f"{self.label:<12} [{bar}] {self.done:>9,}/{self.total:,} "
            f"{fraction:6.1%} {rate:10,.0f}/s {elapsed:6.1f}s"
        )
        end = "\n" if final or not self._tty else ""
        self._stream.write(("\r" if self._tty else "") + line + end)
        self._stream.flush()
