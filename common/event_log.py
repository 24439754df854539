"""Reading rows of the ``events`` table: every reader goes through :func:`stored_event`,
so every reader sees payloads in the current schema (``common.upcasting``)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import orjson

from common.events import UNREADABLE_PAYLOAD, StoredEvent
from common.upcasting import UpcastError, upcast

# The columns :func:`stored_event` needs, for a SELECT from ``events`` (alias ``v``).
EVENT_COLUMNS = (
    "v.seq, v.xid::text::bigint AS xid, v.aggregate_type, v.aggregate_id::text AS aggregate_id, "
    "v.aggregate_version, v.event_type, v.schema_version, v.payload::text AS payload, "
    "v.occurred_at"
)


def parse_json(text: str) -> Any:
    """The stored JSON text as Python values."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:  # e.g. an integer beyond 64 bits, which jsonb allows
        return json.loads(text)


def current_payload(event_type: str, schema_version: int, stored: Any) -> dict[str, Any]:
    """``stored`` (a parsed payload of ``schema_version``) in the current schema, or
    ``{UNREADABLE_PAYLOAD: why}`` when it is not an object or cannot be upcast: the
    reducers then reject the event rather than read a shape they do not know."""
    if not isinstance(stored, dict):
        return {UNREADABLE_PAYLOAD: f"payload is not a JSON object: {stored!r:.100}"}
    try:
        return upcast(event_type, schema_version, stored)
    except UpcastError as exc:
        return {UNREADABLE_PAYLOAD: str(exc)}


def stored_event(row: Mapping[str, Any]) -> StoredEvent:
    """A row with :data:`EVENT_COLUMNS` as a :class:`StoredEvent` (payload upcast)."""
    return StoredEvent(
        seq=int(row["seq"]),
        xid=int(row["xid"]),
        aggregate_type=row["aggregate_type"],
        aggregate_id=row["aggregate_id"],
        aggregate_version=int(row["aggregate_version"]),
        event_type=row["event_type"],
        payload=current_payload(
            row["event_type"], int(row["schema_version"]), parse_json(row["payload"])
        ),
        occurred_at=row["occurred_at"],
    )
