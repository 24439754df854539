"""Base class for aggregates that record their own domain events."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar

from write_server.domain import validation
from write_server.domain.errors import StaleVersion
from write_server.domain.events import DomainEvent


@dataclass(eq=False, kw_only=True)
class Aggregate:
    """State plus the events recorded since it was loaded.

    ``loaded_version`` is the version read from storage (0 for a new aggregate);
    the adapter saves with ``WHERE version = loaded_version`` so a writer that
    slipped past the lock still cannot overwrite a newer state.
    """

    kind: ClassVar[str]
    id: str
    version: int = 0
    created_at: datetime
    updated_at: datetime
    deleted: bool = False
    loaded_version: int = 0
    pending: list[DomainEvent] = field(default_factory=list)

    def record(self, event_type: type[DomainEvent], now: datetime, **fields: Any) -> None:
        self.version += 1
        self.updated_at = now
        self.pending.append(
            event_type(aggregate_id=self.id, version=self.version, occurred_at=now, **fields)
        )

    def change(
        self,
        changes: dict[str, Any],
        rules: dict[str, validation.Rule],
        event_type: type[DomainEvent],
        now: datetime,
    ) -> bool:
        """Validate ``changes``, apply the fields that differ and record ``event_type``
        with them; False (and no event) when nothing changes."""
        validation.validate(changes, rules)
        effective = {k: val for k, val in changes.items() if getattr(self, k) != val}
        if not effective:
            return False
        for name, value in effective.items():
            setattr(self, name, value)
        self.record(event_type, now, changes=effective)
        return True

    def check_version(self, expected: int) -> None:
        """0 means "don't check"; anything else must equal the current version."""
        if expected and expected != self.version:
            raise StaleVersion(self.kind.lower(), self.id, expected, self.version)

    def take_events(self) -> list[DomainEvent]:
        events, self.pending = self.pending, []
        return events
