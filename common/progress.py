"""A dependency-free progress bar on stderr (seed, rebuild): ``label [#####.....] done/total unit``."""

from __future__ import annotations

import sys
import time
from typing import TextIO

_WIDTH = 30
_MIN_INTERVAL_S = 0.1


class Progress:
    """Redraws one line in place (throttled); a non-terminal gets only the final line."""

    def __init__(
        self, label: str, total: int, out: TextIO | None = None, unit: str = "events"
    ) -> None:
        self.label = label
        self.total = total
        self.done = 0
        self._unit = f" {unit}" if unit else ""
        self._out = out if out is not None else sys.stderr
        self._tty = self._out.isatty()
        self._drawn_at = 0.0

    def advance(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if self._tty and now - self._drawn_at >= _MIN_INTERVAL_S:
            self._drawn_at = now
            self._draw("\r")

    def finish(self, note: str = "") -> None:
        self._draw("\r" if self._tty else "", end=f" {note}\n" if note else "\n")

    def _draw(self, start: str, end: str = "") -> None:
        total = max(self.total, self.done)  # events committed meanwhile are caught up too
        filled = _WIDTH if total == 0 else _WIDTH * self.done // total
        bar = "#" * filled + "." * (_WIDTH - filled)
        self._out.write(f"{start}{self.label} [{bar}] {self.done:,}/{total:,}{self._unit}{end}")
        self._out.flush()
