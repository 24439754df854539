"""Upcasting stored payloads to the current schema (common/upcasting.py, common/event_log.py)."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from common import events as ev
from common.entities.order import reduce_order
from common.event_log import current_payload, stored_event
from common.reducers import ReducerError
from common.upcasting import UPCASTERS, UpcastError, current_version, upcast

CID = "0190a000-0000-7000-8000-000000000001"
ITEMS = [
    {
        "product_id": "0190a000-0000-7000-8000-000000000002",
        "name": "Book",
        "quantity": 2,
        "unit_price_cents": 1999,
        "line_total_cents": 3998,
    }
]
PLACED_V1: dict[str, Any] = {
    "order_number": "ORD-000001",
    "customer_id": CID,
    "customer_name": "Ada",
    "customer_email": "ada@example.com",
    "items": ITEMS,
    "total_cents": 3998,
    "currency": "EUR",
    "status": "PENDING",
}
PLACED_V2: dict[str, Any] = {
    "order_number": "ORD-000001",
    "customer": {"id": CID, "name": "Ada", "email": "ada@example.com"},
    "items": ITEMS,
    "total_cents": 3998,
    "currency": "EUR",
    "status": "PENDING",
}


def test_every_event_type_has_a_current_version_and_only_order_placed_moved() -> None:
    assert {t for t, v in ev.SCHEMA_VERSIONS.items() if v != 1} == {ev.ORDER_PLACED}
    assert current_version(ev.ORDER_PLACED) == 2


def test_every_version_below_the_current_one_has_a_step() -> None:
    for event_type, current in ev.SCHEMA_VERSIONS.items():
        for version in range(1, current):
            assert (event_type, version) in UPCASTERS, (event_type, version)


def test_order_placed_v1_becomes_v2() -> None:
    original = copy.deepcopy(PLACED_V1)
    assert upcast(ev.ORDER_PLACED, 1, PLACED_V1) == PLACED_V2
    assert original == PLACED_V1  # the input is not modified


def test_a_current_payload_is_returned_as_is() -> None:
    assert upcast(ev.ORDER_PLACED, 2, PLACED_V2) is PLACED_V2
    assert upcast(ev.PRODUCT_DELETED, 1, {}) == {}


def test_a_version_newer_than_known_is_refused() -> None:
    with pytest.raises(UpcastError, match="newer than the newest known version v2"):
        upcast(ev.ORDER_PLACED, 3, PLACED_V2)
    with pytest.raises(UpcastError, match="newer"):
        upcast(ev.PRODUCT_CREATED, 2, {})


def test_versions_start_at_one() -> None:
    with pytest.raises(UpcastError, match="start at 1"):
        upcast(ev.ORDER_PLACED, 0, PLACED_V1)


def test_a_missing_step_is_named() -> None:
    with pytest.raises(UpcastError, match="no upcaster from v1 to v2"):
        upcast(ev.ORDER_PLACED, 1, PLACED_V1, upcasters={})


def test_steps_chain_in_order() -> None:
    # A pretend v3 of OrderPlaced (current = 3): v1 -> v2 -> v3 through two steps.
    calls: list[int] = []

    def v2_to_v3(p: dict[str, Any]) -> dict[str, Any]:
        calls.append(2)
        return {**p, "channel": "web"}

    steps = {**UPCASTERS, (ev.ORDER_PLACED, 2): v2_to_v3}
    with pytest.MonkeyPatch.context() as mp:
        versions = dict(ev.SCHEMA_VERSIONS) | {ev.ORDER_PLACED: 3}
        mp.setattr(ev, "SCHEMA_VERSIONS", versions)
        assert upcast(ev.ORDER_PLACED, 1, PLACED_V1, upcasters=steps) == {
            **PLACED_V2,
            "channel": "web",
        }
        assert upcast(ev.ORDER_PLACED, 2, PLACED_V2, upcasters=steps)["channel"] == "web"
    assert calls == [2, 2]


def test_a_v1_payload_that_lacks_its_fields_is_an_upcast_error() -> None:
    with pytest.raises(UpcastError, match="v1 payload unreadable"):
        upcast(ev.ORDER_PLACED, 1, {"order_number": "ORD-1"})


def test_current_payload_marks_what_cannot_be_read() -> None:
    assert current_payload(ev.ORDER_PLACED, 1, PLACED_V1) == PLACED_V2
    assert ev.UNREADABLE_PAYLOAD in current_payload(ev.ORDER_PLACED, 9, PLACED_V2)
    assert ev.UNREADABLE_PAYLOAD in current_payload(ev.ORDER_PLACED, 1, [1, 2])


def _row(schema_version: int, payload: str) -> dict[str, Any]:
    return {
        "seq": 7,
        "xid": 700,
        "aggregate_type": ev.ORDER,
        "aggregate_id": "0190a000-0000-7000-8000-000000000003",
        "aggregate_version": 1,
        "event_type": ev.ORDER_PLACED,
        "schema_version": schema_version,
        "payload": payload,
        "occurred_at": datetime(2026, 1, 1, tzinfo=UTC),
    }


def test_a_stored_v1_row_reduces_like_a_v2_one() -> None:
    v1 = reduce_order(None, stored_event(_row(1, json.dumps(PLACED_V1))))
    v2 = reduce_order(None, stored_event(_row(2, json.dumps(PLACED_V2))))
    assert v1 is not None and v1 == v2
    assert (v1.customer_id, v1.customer_name, v1.customer_email) == (CID, "Ada", "ada@example.com")


def test_an_unreadable_row_is_a_reducer_error() -> None:
    with pytest.raises(ReducerError, match=r"unreadable payload.*newer than"):
        reduce_order(None, stored_event(_row(3, json.dumps(PLACED_V2))))
    # A v2 payload mislabelled as v1 is not silently misread either.
    with pytest.raises(ReducerError, match="unreadable payload"):
        reduce_order(None, stored_event(_row(1, json.dumps(PLACED_V2))))
