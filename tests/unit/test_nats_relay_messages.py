"""The relay's messages and error mapping, without a server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import nats.errors
import nats.js.errors
import orjson

from common.events import StoredEvent
from common.outages import is_transient
from projector.relay import RelayUnavailable
from projector.relay import headers as h
from projector.relay.nats_relay import covers, unavailable


def event(**changes: object) -> StoredEvent:
    values: dict[str, object] = {
        "seq": 42,
        "xid": 7,
        "aggregate_type": "Order",
        "aggregate_id": "6f1c1a52-4bd4-4b61-9d0e-2d5b0c3c9d11",
        "aggregate_version": 3,
        "event_type": "OrderShipped",
        "payload": {"status": "SHIPPED", "big": 2**70},
        "occurred_at": datetime(2024, 5, 1, 14, 0, 0, 123, tzinfo=timezone(timedelta(hours=2))),
    }
    values.update(changes)
    return StoredEvent(**values)  # type: ignore[arg-type]


def test_a_message_carries_the_event_and_its_headers() -> None:
    extra = h.Extra({"request_id": "req\r\n-1"}, 1)
    msg = h.message("shop.events", event(), extra)
    assert msg.subject == "shop.events.Order.OrderShipped"
    assert msg.headers[h.MSG_ID] == msg.headers[h.EVENT_ID] == "evt_42"
    assert msg.headers[h.REQUEST_ID] == "req -1"  # one line
    assert msg.headers[h.OCCURRED_AT] == "2024-05-01T12:00:00.000123Z"
    assert msg.headers[h.POSITION] == "00000000000000000007:00000000000000000042"
    assert b'"big":1180591620717411303424' in msg.body  # beyond 64 bits: json's fallback
    body = orjson.loads(msg.body.replace(b"1180591620717411303424", b"0"))
    assert (body["id"], body["seq"], body["schema_version"]) == ("evt_42", 42, 1)
    command, size = msg.hpub("_INBOX.x.1_0")
    block = msg.header_block()
    assert command.startswith(f"HPUB {msg.subject} _INBOX.x.1_0 {len(block)} {size}\r\n".encode())
    assert command.endswith(msg.body + b"\r\n") and size == msg.size()


def test_subject_tokens_are_sanitised() -> None:
    msg = h.message("p", event(event_type="Odd type.*>"), h.Extra({}, 1))
    assert msg.subject == "p.Order.Odd_type___"
    assert h.rfc3339(datetime(2024, 1, 1, tzinfo=UTC)) == "2024-01-01T00:00:00.000000Z"


def test_stream_subjects_cover_ours() -> None:
    assert covers("shop.events.>", "shop.events.>")
    assert covers("shop.>", "shop.events.>")
    assert covers(">", "shop.events.>")
    assert not covers("shop.events.*", "shop.events.>")
    assert not covers("shop.events.Order.>", "shop.events.>")
    assert not covers("other.>", "shop.events.>")


def test_nats_outages_are_transient() -> None:
    assert is_transient(RelayUnavailable("down"))
    for exc in (
        nats.errors.NoServersError(),
        nats.errors.ConnectionClosedError(),
        nats.errors.TimeoutError(),
        nats.errors.OutboundBufferLimitError(),
        nats.js.errors.NoStreamResponseError(),
        nats.js.errors.ServiceUnavailableError(code=503),
        nats.js.errors.APIError(code=400, err_code=10047),
    ):
        assert unavailable(exc), exc
    assert not unavailable(nats.js.errors.BadRequestError(code=400, err_code=10054))
    assert not unavailable(nats.errors.MaxPayloadError())
