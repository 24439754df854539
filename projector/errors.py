"""Errors the projector raises between its own parts (never shown to gRPC clients)."""

from __future__ import annotations

from common.events import StoredEvent
from common.positions import ORIGIN, Position
from common.reducers import ReducerError

__all__ = [
    "CheckpointMoved",
    "LeadershipLost",
    "NotRebuildable",
    "PoisonEvent",
    "ReducerError",
    "RewindRefused",
    "StoreLost",
]


class PoisonEvent(Exception):
    """A consumer cannot apply ``event`` although its own state is intact: the consumer
    stops right before it (see :mod:`projector.runner`)."""

    def __init__(self, event: StoredEvent, reason: str) -> None:
        super().__init__(reason)
        self.event = event


class CheckpointMoved(Exception):
    """The stored checkpoint is not the expected one (or the store's generation was
    replaced by a rebuild): the commit changed nothing; reload the checkpoint."""

    def __init__(self, expected: Position, found: Position | None, detail: str = "") -> None:
        super().__init__(f"checkpoint moved: expected {expected}, found {found} {detail}".strip())
        self.expected = expected
        self.found = found


class StoreLost(CheckpointMoved):
    """The consumer's state is not there: never built, or lost (Redis emptied or
    restarted without persistence, a generation or checkpoint row that vanished).

    Nothing was changed. The runner answers it by rebuilding the consumer from the
    event log into a new copy and switching to it; it is never a poison event.
    """

    def __init__(self, name: str, why: str, expected: Position = ORIGIN) -> None:
        Exception.__init__(self, f"{name}: {why}")
        self.expected = expected
        self.found = None
        self.why = why


class LeadershipLost(Exception):
    """The runner no longer (provably) holds its consumer's lease."""


class GaveWay(LeadershipLost):
    """The runner gives its lease back: its process leads more than its fair share since
    another process joined (:mod:`projector.membership`)."""


class NotRebuildable(Exception):
    """The consumer has no copies to rebuild (a relay: what it published stays published)."""


class RewindRefused(Exception):
    """A consumer cannot be rewound to that position: it cannot undo what it did after it,
    or the position is ahead of its checkpoint (a rewind never skips events). Nothing was
    changed (:mod:`projector.rewind`)."""
