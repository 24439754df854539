"""How the runners wait after failures.

:class:`Backoff` starts short and doubles up to a cap, and starts over after every
success, so recovery after an outage is quick however many outages came before.
It also says when to log: the first failure of an incident, then every
``log_every_s``, so an outage is visible without flooding the log.
"""

from __future__ import annotations

import time


class Backoff:
    """Delays ``initial``, ``2 * initial``, ... up to ``cap``; :meth:`success` starts over."""

    def __init__(self, initial: float, cap: float, log_every_s: float = 30.0) -> None:
        self._initial = initial
        self._cap = cap
        self._log_every = log_every_s
        self._next = initial
        self.failures = 0
        self._logged_at = 0.0

    def failure(self) -> float:
        """Count a failure; the delay before the next attempt."""
        self.failures += 1
        delay, self._next = self._next, min(self._next * 2, self._cap)
        return delay

    def success(self) -> None:
        self._next = self._initial
        self.failures = 0

    def should_log(self) -> bool:
        """True for the first failure of an incident, then once every ``log_every_s``."""
        now = time.monotonic()
        if self.failures <= 1 or now - self._logged_at >= self._log_every:
            self._logged_at = now
            return True
        return False
