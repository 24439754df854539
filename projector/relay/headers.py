"""What the relay publishes for one event: its id, subject, JSON body and NATS headers.

Pure functions of a :class:`~common.events.StoredEvent` and the few columns a
``StoredEvent`` does not carry (``metadata``, the stored ``schema_version``), so they
can be tested without a server.

The event id. The ``events`` table has no id column of its own: ``seq`` (its primary
key, a ``bigserial`` never reused) is what identifies an event, so the id is
``evt_<seq>``. It is what ``Nats-Msg-Id`` carries (the stream drops a second publish
of the same id within its duplicate window) and what subscribers de-duplicate on.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from common.events import SCHEMA_VERSIONS, StoredEvent

MSG_ID = "Nats-Msg-Id"
EVENT_ID = "Cqrs-Event-Id"
AGGREGATE_TYPE = "Cqrs-Aggregate-Type"
AGGREGATE_ID = "Cqrs-Aggregate-Id"
AGGREGATE_VERSION = "Cqrs-Aggregate-Version"
EVENT_TYPE = "Cqrs-Event-Type"
SCHEMA_VERSION = "Cqrs-Schema-Version"
OCCURRED_AT = "Cqrs-Occurred-At"
REQUEST_ID = "Cqrs-Request-Id"
# The event's position in the log (``Position.to_checkpoint()``): the relay reads it back
# from the stream's last message to know what it published before a crash.
POSITION = "Cqrs-Position"

# What a subject token may not contain (separators, wildcards, white space).
_NOT_A_TOKEN = re.compile(r"[.*>\s]")


def event_id(seq: int) -> str:
    """The stable id of the event with this ``seq``."""
    return f"evt_{seq}"


def subject(prefix: str, event: StoredEvent) -> str:
    """``<prefix>.<aggregate_type>.<event_type>``."""
    return f"{prefix}.{_token(event.aggregate_type)}.{_token(event.event_type)}"


def _token(text: str) -> str:
    return _NOT_A_TOKEN.sub("_", text) or "_"


def rfc3339(at: datetime) -> str:
    """UTC, microseconds, ``Z``: ``2024-05-01T12:00:00.123456Z``."""
    if at.utcoffset():
        at = at.astimezone(UTC)
    return at.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


@dataclass(frozen=True, slots=True)
class Extra:
    """The columns of an event row that a ``StoredEvent`` does not carry."""

    metadata: Mapping[str, Any]
    stored_schema_version: int


@dataclass(frozen=True, slots=True)
class Message:
    subject: str
    body: bytes
    headers: dict[str, str]

    def size(self) -> int:
        """What counts against the server's ``max_payload``: body and header block."""
        return len(self.body) + len(self.header_block())

    def header_block(self) -> bytes:
        """The headers as NATS writes them (``NATS/1.0``, one ``key: value`` line each)."""
        lines = "".join(f"{k}: {v}\r\n" for k, v in self.headers.items())
        return f"NATS/1.0\r\n{lines}\r\n".encode()

    def hpub(self, reply: str) -> tuple[bytes, int]:
        """The whole ``HPUB`` protocol command that publishes it with this reply subject,
        and its :meth:`size`."""
        block = self.header_block()
        size = len(block) + len(self.body)
        command = b"".join(
            (f"HPUB {self.subject} {reply} {len(block)} {size}\r\n".encode(), block,
             self.body, b"\r\n")
        )  # fmt: skip
        return command, size


def message(prefix: str, event: StoredEvent, extra: Extra) -> Message:
    """The message that relays ``event``. Its payload is in the current schema of its type
    (readers upcast), so ``schema_version`` is the current one."""
    ident = event_id(event.seq)
    version = SCHEMA_VERSIONS.get(event.event_type, extra.stored_schema_version)
    occurred = rfc3339(event.occurred_at)
    position = event.position.to_checkpoint()
    body = {
        "id": ident,
        "seq": event.seq,
        "position": position,
        "aggregate_type": event.aggregate_type,
        "aggregate_id": event.aggregate_id,
        "aggregate_version": event.aggregate_version,
        "event_type": event.event_type,
        "schema_version": version,
        "occurred_at": occurred,
        "payload": event.payload,
        "metadata": dict(extra.metadata),
    }
    request_id = extra.metadata.get("request_id")
    headers = {
        MSG_ID: ident,
        EVENT_ID: ident,
        AGGREGATE_TYPE: _header_value(event.aggregate_type),
        AGGREGATE_ID: event.aggregate_id,
        AGGREGATE_VERSION: str(event.aggregate_version),
        EVENT_TYPE: _header_value(event.event_type),
        SCHEMA_VERSION: str(version),
        OCCURRED_AT: occurred,
        REQUEST_ID: _header_value(request_id) if isinstance(request_id, str) else "",
        POSITION: position,
    }
    return Message(subject(prefix, event), _dumps(body), headers)


def _header_value(text: str) -> str:
    """A header value on one line, bounded (it comes from a client)."""
    return " ".join(text.split())[:200]


def _dumps(value: Any) -> bytes:
    try:
        return orjson.dumps(value)
    except TypeError:  # an integer beyond 64 bits (jsonb allows them)
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
