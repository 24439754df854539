"""What a delivery sends: the Standard Webhooks headers and the JSON body of an event.

``webhook-id`` is ``msg_<delivery id>``, the same on every attempt (receivers
de-duplicate on it); ``webhook-timestamp`` is the attempt's time; ``webhook-signature``
is ``v1,`` + base64(HMAC-SHA256(secret, "<id>.<timestamp>.<body>")) with the secret's
bytes (the base64 after ``whsec_``). See https://www.standardwebhooks.com/.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any

import orjson

from common.events import StoredEvent

SECRET_PREFIX = "whsec_"


def webhook_id(delivery_id: int) -> str:
    return f"msg_{delivery_id}"


def body(event: StoredEvent, metadata: dict[str, Any]) -> bytes:
    """``{type, timestamp, data}`` (the spec's recommended envelope); ``data`` is the event
    with its payload in the current schema."""
    return orjson.dumps(
        {
            "type": event.event_type,
            "timestamp": event.occurred_at.isoformat(),
            "data": {
                "sequence": event.seq,
                "aggregate_type": event.aggregate_type,
                "aggregate_id": event.aggregate_id,
                "aggregate_version": event.aggregate_version,
                "event_type": event.event_type,
                "occurred_at": event.occurred_at.isoformat(),
                "request_id": str(metadata.get("request_id", "")),
                "payload": event.payload,
            },
        }
    )


def signature(secret: str, msg_id: str, timestamp: int, content: bytes) -> str:
    """The ``webhook-signature`` header value for one attempt."""
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    signed = f"{msg_id}.{timestamp}.".encode() + content
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def headers(secrets: list[str], msg_id: str, timestamp: int, content: bytes) -> dict[str, str]:
    """The spec's headers; one signature per secret, space-separated (during a rotation
    the new and the previous secret both sign, and a receiver accepts either)."""
    return {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(signature(s, msg_id, timestamp, content) for s in secrets),
    }
