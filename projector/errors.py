"""Errors the projector raises between its own parts (never shown to gRPC clients)."""

from __future__ import annotations

from common.events import StoredEvent


class ReducerError(Exception):
    """An event cannot be applied to the document it targets (a poison event)."""

    def __init__(self, event: StoredEvent, reason: str) -> None:
        super().__init__(
            f"{event.event_type} seq={event.seq} aggregate={event.aggregate_id} "
            f"v{event.aggregate_version}: {reason}"
        )
        self.event = event
        self.reason = reason


class LeadershipLost(Exception):
    """The runner no longer (provably) holds its projection's advisory lock."""
