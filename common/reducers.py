"""What every entity's reducer shares: ``(current document | None, event) -> new
document | None`` (each entity's own is in :mod:`common.entities`).

Inputs are never mutated (a changed document is a new message). Rules, shared by every
event type:

- ``event.aggregate_version <= doc.version``: already applied, return ``doc`` unchanged;
- the entity's creating event needs no document and sets ``created_at`` and
  ``updated_at`` from ``occurred_at``; every other event needs the document at exactly
  the previous version (the event log has no gaps per aggregate), sets ``version`` and
  ``updated_at``;
- the entity's deleting event returns ``None`` (the document is removed);
- anything else (unknown event, missing document, version gap, malformed or
  unreadable payload) raises :class:`ReducerError` (to the projector: a poison event).

Payloads are in the current schema (``common.events``): readers upcast rows first
(``common.event_log``). The projector and the read server's time travel share them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from google.protobuf.message import Message

from common.documents import timestamp
from common.events import UNREADABLE_PAYLOAD, StoredEvent

M = TypeVar("M", bound=Message)


class ReducerError(Exception):
    """An event cannot be applied to the document it targets."""

    def __init__(self, event: StoredEvent, reason: str) -> None:
        super().__init__(
            f"{event.event_type} seq={event.seq} aggregate={event.aggregate_id} "
            f"v{event.aggregate_version}: {reason}"
        )
        self.event = event
        self.reason = reason


def fold(
    cls: type[M],
    doc: Message | None,
    event: StoredEvent,
    *,
    created: str,
    deleted: str,
    change: Callable[[M, StoredEvent], None],
) -> M | None:
    """The rules every entity's reducer shares (see the module docstring): ``created``
    makes the document, ``deleted`` removes it, ``change`` applies any other event to a
    copy (raising :class:`ReducerError` for one it does not know)."""
    if doc is not None and not isinstance(doc, cls):
        raise ReducerError(event, f"document is a {type(doc).__name__}, not a {cls.__name__}")
    current: Any = doc  # every document has version, created_at and updated_at
    if current is not None and event.aggregate_version <= current.version:
        return doc  # already applied: replays are no-ops
    if UNREADABLE_PAYLOAD in event.payload:
        raise ReducerError(event, f"unreadable payload: {event.payload[UNREADABLE_PAYLOAD]}")
    new: Any
    if event.event_type == created:
        if current is not None:
            raise ReducerError(event, f"document already exists at v{current.version}")
        new = cls()
        new.id = event.aggregate_id
        new.created_at.CopyFrom(timestamp(event.occurred_at))
    else:
        if current is None:
            raise ReducerError(event, "no document to apply it to")
        if event.aggregate_version != current.version + 1:
            raise ReducerError(event, f"version gap: document is at v{current.version}")
        if event.event_type == deleted:
            return None
        new = cls()
        new.CopyFrom(current)
    try:
        change(new, event)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        # Malformed payloads surface as these from dict access and protobuf setters.
        raise ReducerError(event, f"bad payload: {type(exc).__name__}: {exc}") from exc
    new.version = event.aggregate_version
    new.updated_at.CopyFrom(timestamp(event.occurred_at))
    made: M = new
    return made


def own_fields(
    doc: Message, event: StoredEvent, fields: tuple[str, ...], *, created: str, updated: str
) -> bool:
    """Set the entity's own ``fields`` from its creating event (all of them) or its
    updating one (the changes); False for any other event."""
    if event.event_type == created:
        set_fields(doc, event, {f: event.payload[f] for f in fields})
    elif event.event_type == updated:
        set_fields(doc, event, changes(event, fields))
    else:
        return False
    return True


def changes(event: StoredEvent, allowed: tuple[str, ...]) -> Mapping[str, Any]:
    """An ``*Updated`` event's ``changes``, refused when it names a field not ``allowed``."""
    changes = event.payload.get("changes")
    if not isinstance(changes, dict):
        raise ReducerError(event, "payload has no 'changes' object")
    unknown = set(changes) - set(allowed)
    if unknown:
        raise ReducerError(event, f"unknown fields in changes: {sorted(unknown)}")
    return changes


def set_fields(doc: Message, event: StoredEvent, values: Mapping[str, Any]) -> None:
    """Set the document's fields from a payload (a null is refused)."""
    for field, value in values.items():
        if value is None:
            raise ReducerError(event, f"{field} is null")
        setattr(doc, field, value)


def text(event: StoredEvent, value: Any) -> str:
    """A payload value that must be a string."""
    if not isinstance(value, str):
        raise ReducerError(event, f"expected a string, got {value!r}")
    return value
