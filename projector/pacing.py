"""How the runners wait after failures.

:class:`Backoff` starts short and doubles up to a cap, and starts over after every
success, so recovery after an outage is quick however many outages came before.
It also says when to log: the first failure of an incident, then every
``log_every_s``, so an outage is visible without flooding the log.

A failure may say itself when to try again (a breaker's ``retry_in_s``, a
``Retry-After``'s ``after_s``): :func:`retry_hint` finds it in the exception's chain and
the runners wait at least that long, so they do not knock on a door that says "closed
for 5 s" twenty times a second.
"""

from __future__ import annotations

import time

# The longest a failure's own hint is honoured: a breaker ttl or a Retry-After beyond this
# would hide a recovery for too long.
MAX_HINT_S = 60.0


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


def retry_hint(exc: BaseException) -> float | None:
    """The pause ``exc`` (or an exception it was raised from) asks for, in seconds (at
    most :data:`MAX_HINT_S`), or None when no failure in its chain names one."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        for attribute in ("retry_in_s", "after_s"):
            value = getattr(current, attribute, None)
            if isinstance(value, int | float) and value > 0:
                return float(min(value, MAX_HINT_S))
        current = current.__cause__ or current.__context__
    return None
