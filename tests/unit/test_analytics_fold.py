"""The analytics fold in memory: sums as deltas, times kept by rule, new/returning."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime

import pytest

from common import events as ev
from common.events import StoredEvent
from projector.analytics.fold import (
    EVENT_TYPES,
    AnalyticsError,
    CustomerTimes,
    Line,
    Loaded,
    OrderFact,
    affected,
    fold,
    month_deltas,
    month_of,
    placed_orders,
    referenced_orders,
)

C, P = str(uuid.uuid4()), str(uuid.uuid4())
JAN = datetime(2026, 1, 31, 23, 59, tzinfo=UTC)
FEB = datetime(2026, 2, 1, 0, 1, tzinfo=UTC)


def event(kind: str, order: str, at: datetime, seq: int, **payload: object) -> StoredEvent:
    return StoredEvent(seq, seq, ev.ORDER, order, seq, kind, dict(payload), at)


def placed(order: str, at: datetime, seq: int, total: int = 300) -> StoredEvent:
    return event(
        ev.ORDER_PLACED, order, at, seq,
        customer={"id": C, "name": "c", "email": "c@x"}, currency="EUR", total_cents=total,
        status="PENDING",
        items=[{"product_id": P, "quantity": 3, "line_total_cents": total}],
    )  # fmt: skip


def test_months_are_utc_calendar_months() -> None:
    assert month_of(JAN) == date(2026, 1, 1)
    assert month_of(datetime.fromisoformat("2026-02-01T00:30:00+01:00")) == date(2026, 1, 1)


def test_placing_adds_every_sum_and_extends_the_times() -> None:
    o = str(uuid.uuid4())
    batch = [placed(o, FEB, 1)]
    changes = fold(batch, Loaded({}, {C: CustomerTimes(JAN, JAN)}, placed=placed_orders(batch)))
    assert changes.customer_delta[C] == [1, 0]
    assert changes.customer_currency_delta[(C, "EUR")] == [1, 300]
    assert changes.product_currency_delta[(P, "EUR")] == [3, 1, 300]
    assert changes.month_delta[(date(2026, 2, 1), "EUR")] == [1, 300]
    assert changes.customer_times[C] == CustomerTimes(JAN, FEB)
    assert changes.last_sold[P] == FEB and not changes.recompute_customers


def test_placed_and_cancelled_in_one_batch_nets_to_nothing_but_a_cancellation() -> None:
    o = str(uuid.uuid4())
    batch = [placed(o, FEB, 1), event(ev.ORDER_CANCELLED, o, FEB, 2, status="CANCELLED")]
    changes = fold(batch, Loaded({}, placed=placed_orders(batch)))
    assert changes.customer_delta[C] == [0, 1]
    assert changes.month_delta[(date(2026, 2, 1), "EUR")] == [0, 0]
    assert changes.recompute_customers == {C} and changes.recompute_products == {P}
    assert changes.orders[o].status == "CANCELLED"


def test_deleting_a_cancelled_order_only_drops_the_cancellation() -> None:
    o = str(uuid.uuid4())
    fact = OrderFact(o, C, "EUR", 300, JAN, "CANCELLED", False, [Line(P, 3, 300)])
    changes = fold([event(ev.ORDER_DELETED, o, FEB, 5)], Loaded({o: fact}))
    assert changes.customer_delta[C] == [0, -1]
    assert not any(changes.month_delta.values())


def test_events_without_their_order_or_with_a_bad_payload_are_poison() -> None:
    with pytest.raises(AnalyticsError, match="no OrderPlaced"):
        fold([event(ev.ORDER_SHIPPED, str(uuid.uuid4()), FEB, 1)], Loaded({}))
    with pytest.raises(AnalyticsError, match="bad payload"):
        placed_orders([event(ev.ORDER_PLACED, str(uuid.uuid4()), FEB, 1, currency="EUR")])


def test_what_a_batch_must_load() -> None:
    old, new = str(uuid.uuid4()), str(uuid.uuid4())
    batch = [placed(new, FEB, 1), event(ev.ORDER_CANCELLED, new, FEB, 2),
             event(ev.ORDER_SHIPPED, old, FEB, 3)]  # fmt: skip
    new_facts = placed_orders(batch)
    assert referenced_orders(batch, new_facts) == {old}
    facts = {old: OrderFact(old, "other", "EUR", 1, JAN, "CONFIRMED", False, [Line("q", 1, 1)])}
    touched = affected([*facts.values(), *new_facts.values()])
    assert touched.customers == {C, "other"} and touched.products == {P, "q"}


def test_a_cancelled_first_order_makes_the_customer_new_in_its_next_month() -> None:
    jan, feb = (date(2026, 1, 1), "EUR"), (date(2026, 2, 1), "EUR")
    o = str(uuid.uuid4())
    fact = OrderFact(o, C, "EUR", 300, JAN, "PENDING", False, [Line(P, 3, 300)])
    changes = fold([event(ev.ORDER_CANCELLED, o, FEB, 9)], Loaded({o: fact}))
    # Before: new in January, returning in February; after: January empty, new in February.
    deltas = month_deltas({C: {jan: 1, feb: 1}}, {C: JAN}, {C: FEB}, changes)
    assert deltas == {jan: [-1, 0], feb: [1, -1]}


def captured(order: str, at: datetime, seq: int, amount: int = 300) -> StoredEvent:
    return event(ev.PAYMENT_CAPTURED, order, at, seq, provider_charge_id="ch", amount_cents=amount,
                 currency="EUR")  # fmt: skip


def refunded(order: str, at: datetime, seq: int) -> StoredEvent:
    return event(ev.PAYMENT_REFUNDED, order, at, seq, provider_refund_id="re", amount_cents=300)


def fact(order: str, status: str = "CONFIRMED", paid: int | None = None) -> OrderFact:
    return OrderFact(order, C, "EUR", 300, JAN, status, False, [Line(P, 3, 300)], paid)


def test_a_capture_counts_the_payment_and_a_refund_takes_it_out() -> None:
    o = str(uuid.uuid4())
    changes = fold([captured(o, FEB, 5)], Loaded({o: fact(o)}))
    assert changes.payment_delta[(C, "EUR")] == [1, 300]
    assert changes.orders[o].paid_cents == 300 and changes.orders[o].paid
    assert not any(changes.customer_currency_delta.values())  # the order counted already
    changes = fold([refunded(o, FEB, 6)], Loaded({o: fact(o, "CANCELLED", 300)}))
    assert changes.payment_delta[(C, "EUR")] == [-1, -300]
    assert changes.orders[o].paid_cents is None


def test_placed_and_paid_in_one_batch_then_cancelling_keeps_the_payment() -> None:
    o = str(uuid.uuid4())
    batch = [
        placed(o, FEB, 1),
        event(ev.ORDER_CONFIRMED, o, FEB, 2, status="CONFIRMED"),
        captured(o, FEB, 3),
        event(ev.ORDER_CANCELLED, o, FEB, 4, status="CANCELLED"),
    ]
    changes = fold(batch, Loaded({}, placed=placed_orders(batch)))
    assert changes.payment_delta[(C, "EUR")] == [1, 300]
    assert changes.customer_currency_delta[(C, "EUR")] == [0, 0]
    assert changes.orders[o].paid_cents == 300


def test_deleting_a_paid_order_takes_its_payment_out_and_a_late_refund_changes_nothing() -> None:
    o = str(uuid.uuid4())
    batch = [event(ev.ORDER_DELETED, o, FEB, 7), refunded(o, FEB, 8)]
    changes = fold(batch, Loaded({o: fact(o, "CANCELLED", 300)}))
    assert changes.payment_delta[(C, "EUR")] == [-1, -300]
    assert changes.customer_delta[C] == [0, -1]
    assert changes.orders[o].deleted and changes.orders[o].paid_cents is None


def test_payment_events_that_make_no_sense_change_nothing() -> None:
    o = str(uuid.uuid4())
    # A refund of a payment never captured; a capture of one that already counts; a capture
    # of a deleted order.
    assert not any(fold([refunded(o, FEB, 5)], Loaded({o: fact(o)})).payment_delta.values())
    twice = fold([captured(o, FEB, 5, amount=999)], Loaded({o: fact(o, paid=300)}))
    assert not any(twice.payment_delta.values()) and twice.orders[o].paid_cents == 300
    gone = fact(o, "DELIVERED")
    gone.deleted = True
    late = fold([captured(o, FEB, 5)], Loaded({o: gone}))
    assert not any(late.payment_delta.values()) and late.orders[o].paid_cents is None


def test_a_capture_without_its_order_or_amount_is_poison() -> None:
    o = str(uuid.uuid4())
    with pytest.raises(AnalyticsError, match="no OrderPlaced"):
        fold([captured(o, FEB, 5)], Loaded({}))
    bad = event(ev.PAYMENT_CAPTURED, o, FEB, 5, provider_charge_id="ch", currency="EUR")
    with pytest.raises(AnalyticsError, match="bad payload"):
        fold([bad], Loaded({o: fact(o)}))


def test_the_fold_reads_captures_and_refunds_only() -> None:
    assert {ev.PAYMENT_CAPTURED, ev.PAYMENT_REFUNDED} <= set(EVENT_TYPES)
    assert not {ev.PAYMENT_REQUESTED, ev.PAYMENT_FAILED, ev.REFUND_REQUESTED} & set(EVENT_TYPES)
