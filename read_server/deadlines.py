"""How long a request may wait for a projection to catch up, given its deadline."""

from __future__ import annotations

import grpc

# Part of the caller's remaining time kept back so that "not caught up" (UNAVAILABLE)
# reaches the client before its own DEADLINE_EXCEEDED would, even on a loaded server
# where many waits end at once (each reply costs ~0.3 ms of CPU): a third of it, at
# least 150 ms and at most half a second.
REPLY_MARGIN_SHARE = 1 / 3
REPLY_MARGIN_MIN_S = 0.15
REPLY_MARGIN_MAX_S = 0.5


def reply_margin(remaining: float) -> float:
    return min(max(remaining * REPLY_MARGIN_SHARE, REPLY_MARGIN_MIN_S), REPLY_MARGIN_MAX_S)


def wait_budget(context: grpc.aio.ServicerContext, max_wait_s: float) -> float:
    """``max_wait_s``, cut so that the reply still beats the caller's deadline."""
    budget = max_wait_s
    remaining = context.time_remaining()
    if remaining is not None:
        budget = min(budget, remaining - reply_margin(remaining))
    return max(0.0, budget)
