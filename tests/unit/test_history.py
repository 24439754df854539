"""History and time travel without a database: page tokens, typed payloads, request
validation, replay, and the CLI's lines."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from common import events as ev
from common.cursors import InvalidScopedToken, ScopedTokens
from common.errors import InvalidArgument
from common.event_log import logged_event
from common.events import StoredEvent
from common.pb.shop.v1 import history_pb2 as hpb
from common.pb.shop.v1 import query_service_pb2 as qs
from common.pb.shop.v1 import shop_pb2
from cqrs.events import UsageError, parse_filter, show_lines, tail_line
from read_server.history.as_of import replay
from read_server.history.paging import (
    InvalidHistoryToken,
    decode_history_token,
    encode_history_token,
)
from read_server.history.payloads import history_event, typed_payload
from read_server.history.rpcs import HistoryRpcs
from tests.unit.test_upcasting import CID, PLACED_V1, PLACED_V2

AID = "0190a000-0000-7000-8000-00000000000a"
OTHER = "0190a000-0000-7000-8000-00000000000b"
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


# -- page tokens -------------------------------------------------------------------------------


def test_token_round_trip() -> None:
    assert decode_history_token("", AID) == 0
    for version in (1, 50, 2**63 - 1):
        token = encode_history_token(AID, version)
        assert "=" not in token
        assert decode_history_token(token, AID) == version


def _b64(raw: str) -> str:
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "token",
    [
        "nope!",
        "x" * 200,
        _b64(f"h1|{AID}|0"),
        _b64(f"h1|{AID}|-1"),
        _b64(f"h1|{AID}|01"),
        _b64(f"h1|{AID}|{2**63}"),
        _b64(f"h2|{AID}|5"),
        _b64(f"h1|{AID.upper()}|5"),
        _b64(f"h1|{AID}|5|"),
        encode_history_token(OTHER, 5),  # another aggregate's
    ],
)
def test_bad_tokens_are_refused(token: str) -> None:
    with pytest.raises(InvalidHistoryToken):
        decode_history_token(token, AID)


# -- typed payloads ----------------------------------------------------------------------------

PRODUCT: dict[str, Any] = {
    "name": "Cup",
    "description": "90 ml",
    "price_cents": 1250,
    "currency": "EUR",
    "category": "kitchen",
    "stock": 25,
}
CUSTOMER: dict[str, Any] = {
    "name": "Ann",
    "email": "ann@example.org",
    "address": "1 Road",
    "city": "Glasgow",
    "postal_code": "G1",
    "country": "GB",
}


def test_created_events_map_field_by_field() -> None:
    assert typed_payload(ev.PRODUCT_CREATED, PRODUCT) == (
        "product_created",
        hpb.ProductCreated(**PRODUCT),
    )
    assert typed_payload(ev.CUSTOMER_CREATED, CUSTOMER) == (
        "customer_created",
        hpb.CustomerCreated(**CUSTOMER),
    )


def test_updates_carry_the_changes_and_a_field_mask() -> None:
    field, msg = typed_payload(ev.PRODUCT_UPDATED, {"changes": {"price_cents": 0, "name": "Mug"}})  # type: ignore[misc]
    assert field == "product_updated" and isinstance(msg, hpb.ProductUpdated)
    assert list(msg.update_mask.paths) == ["price_cents", "name"]
    assert (msg.changes.price_cents, msg.changes.name) == (0, "Mug")  # 0 is a change too
    field, msg = typed_payload(ev.CUSTOMER_UPDATED, {"changes": {"city": "Oslo"}})  # type: ignore[misc]
    assert field == "customer_updated" and isinstance(msg, hpb.CustomerUpdated)
    assert list(msg.update_mask.paths) == ["city"] and msg.changes.city == "Oslo"


def test_stock_changes_and_order_status_changes() -> None:
    stock = {"order_id": AID, "quantity": 2, "stock": 23}
    for kind in (ev.PRODUCT_STOCK_RESERVED, ev.PRODUCT_STOCK_RELEASED):
        assert typed_payload(kind, stock) == (
            "product_stock_changed",
            hpb.ProductStockChanged(**stock),
        )
    expected = {
        ev.ORDER_CONFIRMED: shop_pb2.ORDER_STATUS_CONFIRMED,
        ev.ORDER_SHIPPED: shop_pb2.ORDER_STATUS_SHIPPED,
        ev.ORDER_DELIVERED: shop_pb2.ORDER_STATUS_DELIVERED,
        ev.ORDER_CANCELLED: shop_pb2.ORDER_STATUS_CANCELLED,
    }
    for kind, status in expected.items():
        name = shop_pb2.OrderStatus.Name(status).removeprefix("ORDER_STATUS_")
        assert typed_payload(kind, {"status": name}) == (
            "order_status_changed",
            hpb.OrderStatusChanged(status=status),
        )


def test_order_placed_flattens_the_v2_customer() -> None:
    field, msg = typed_payload(ev.ORDER_PLACED, PLACED_V2)  # type: ignore[misc]
    assert field == "order_placed" and isinstance(msg, hpb.OrderPlaced)
    assert (msg.customer_id, msg.customer_name, msg.customer_email) == (
        CID,
        "Ada",
        "ada@example.com",
    )
    assert msg.status == shop_pb2.ORDER_STATUS_PENDING and msg.total_cents == 3998
    assert [i.line_total_cents for i in msg.items] == [3998]


def test_deletions_unknown_types_and_odd_payloads_have_no_typed_payload() -> None:
    for kind in (ev.PRODUCT_DELETED, ev.CUSTOMER_DELETED, ev.ORDER_DELETED, "Mystery"):
        assert typed_payload(kind, {}) is None
    assert typed_payload(ev.PRODUCT_UPDATED, {"changes": {"colour": "red"}}) is None
    assert typed_payload(ev.PRODUCT_CREATED, {"name": "only a name"}) is None
    assert typed_payload(ev.ORDER_CONFIRMED, {"status": "LOST"}) is None


def _row(
    event_type: str,
    payload: Any,
    schema_version: int = 1,
    metadata: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "seq": 42,
        "xid": 900,
        "aggregate_type": ev.ORDER,
        "aggregate_id": AID,
        "aggregate_version": 1,
        "event_type": event_type,
        "schema_version": schema_version,
        "payload": json.dumps(payload),
        "metadata": None if metadata is None else json.dumps(metadata),
        "occurred_at": T0,
    }


def test_history_event_shows_the_current_schema_and_the_stored_version() -> None:
    meta = {"request_id": "r-1", "peer": "ipv4:127.0.0.1:5", "auth_subject": "alice"}
    message = history_event(logged_event(_row(ev.ORDER_PLACED, PLACED_V1, 1, meta)))
    assert (message.event_type, message.version, message.sequence) == (ev.ORDER_PLACED, 1, 42)
    assert message.schema_version == 1
    assert json.loads(message.payload_json) == PLACED_V2
    assert " " not in message.payload_json.replace("Ada Lovelace", "")  # compact
    assert message.metadata == hpb.EventMetadata(
        request_id="r-1", peer="ipv4:127.0.0.1:5", subject="alice"
    )
    assert message.WhichOneof("typed_payload") == "order_placed"
    assert message.occurred_at.ToDatetime(tzinfo=UTC) == T0


def test_an_unreadable_payload_is_shown_as_stored_without_a_typed_payload() -> None:
    message = history_event(logged_event(_row(ev.ORDER_PLACED, PLACED_V2, 7)))
    assert message.schema_version == 7
    assert json.loads(message.payload_json) == PLACED_V2
    assert message.WhichOneof("typed_payload") is None
    assert message.metadata == hpb.EventMetadata()


# -- request validation (raised before any database read) --------------------------------------


class Bare(HistoryRpcs):
    """The mixin with no reads: every call below must fail validation first."""


CONTEXT: grpc.aio.ServicerContext = None  # type: ignore[assignment]


async def _violations(call: Any) -> dict[str, str]:
    with pytest.raises(InvalidArgument) as raised:
        await call
    return {v.field: v.description for v in raised.value.violations}


async def test_history_request_validation() -> None:
    found = await _violations(Bare().GetAggregateHistory(qs.GetAggregateHistoryRequest(), CONTEXT))
    assert set(found) == {"aggregate_type", "aggregate_id"}
    request = qs.GetAggregateHistoryRequest(
        aggregate_type=9,  # type: ignore[arg-type]
        aggregate_id="nope",
        page_size=1001,
        page_token="???",
    )
    found = await _violations(Bare().GetAggregateHistory(request, CONTEXT))
    assert set(found) == {"aggregate_type", "aggregate_id", "page_size", "page_token"}
    request = qs.GetAggregateHistoryRequest(
        aggregate_type=hpb.AGGREGATE_TYPE_ORDER,
        aggregate_id=AID,
        page_token=encode_history_token(OTHER, 3),
    )
    assert set(await _violations(Bare().GetAggregateHistory(request, CONTEXT))) == {"page_token"}


async def test_as_of_request_validation() -> None:
    bare = Bare()
    found = await _violations(bare.GetOrderAsOf(qs.GetOrderAsOfRequest(id=AID), CONTEXT))
    assert found == {"as_of": "is required"}
    found = await _violations(
        bare.GetProductAsOf(qs.GetProductAsOfRequest(id="x", as_of=Timestamp()), CONTEXT)
    )
    assert found == {"id": "must be a UUID"}
    for bad in (Timestamp(seconds=253_402_300_800), Timestamp(seconds=0, nanos=-1)):
        request = qs.GetCustomerAsOfRequest(id=AID, as_of=bad)
        found = await _violations(bare.GetCustomerAsOf(request, CONTEXT))
        assert set(found) == {"as_of"}


# -- replay ------------------------------------------------------------------------------------


def _event(version: int, kind: str, payload: dict[str, Any], minutes: int) -> StoredEvent:
    at = T0 + timedelta(minutes=minutes)
    return StoredEvent(version, 900, ev.PRODUCT, AID, version, kind, payload, at)


def test_replay_keeps_the_version_and_remembers_a_deletion() -> None:
    created = _event(1, ev.PRODUCT_CREATED, PRODUCT, 0)
    updated = _event(2, ev.PRODUCT_UPDATED, {"changes": {"price_cents": 999}}, 5)
    deleted = _event(3, ev.PRODUCT_DELETED, {}, 9)
    replayed = replay([created, updated])
    assert isinstance(replayed.document, shop_pb2.Product)
    assert (replayed.document.price_cents, replayed.document.version) == (999, 2)
    assert replayed.deleted_at is None
    gone = replay([created, updated, deleted])
    assert gone.document is None and gone.deleted_at == T0 + timedelta(minutes=9)
    assert replay([]).document is None and replay([]).deleted_at is None


# -- CLI lines and arguments -------------------------------------------------------------------


def test_cli_lines() -> None:
    logged = logged_event(_row(ev.ORDER_PLACED, PLACED_V1, 1, {"request_id": "r 1", "peer": "p"}))
    line = tail_line(logged)
    assert line.split()[:5] == ["42", "2026-03-01T12:00:00Z", f"Order/{AID}", "v1", "OrderPlaced"]
    assert json.loads(line.split("  ")[-1]) == PLACED_V2
    header, payload = show_lines(logged)
    assert (
        header
        == 'v1  2026-03-01T12:00:00Z  seq 42  OrderPlaced  schema v1  peer=p request_id="r 1"'
    )
    assert json.loads(payload) == PLACED_V2


def test_cli_filters() -> None:
    assert parse_filter("orderplaced", None).type == ev.ORDER_PLACED
    assert parse_filter("ORDER", AID.upper()).type == ev.ORDER
    assert parse_filter(None, AID.upper()).aggregate_id == AID
    with pytest.raises(UsageError, match="unknown type"):
        parse_filter("Orders", None)
    with pytest.raises(UsageError, match="not a UUID"):
        parse_filter(None, "nope")


def test_scoped_tokens_of_another_kind_or_beyond_a_bigint_are_refused() -> None:
    """The webhook deliveries' page tokens share the rules (``d1``, one subscription)."""
    deliveries = ScopedTokens("d1")
    assert deliveries.decode(deliveries.encode(AID, 42), AID) == 42
    for token in (
        _b64(f"d1|{AID}|{2**63}"),  # would overflow the bigint id
        encode_history_token(AID, 42),  # a history token is not a deliveries token
        deliveries.encode(OTHER, 42),
    ):
        with pytest.raises(InvalidScopedToken):
            deliveries.decode(token, AID)
