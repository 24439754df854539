"""The dispatcher's order rules (projector.webhooks.order.plan) on queue fronts."""

from __future__ import annotations

from typing import Any

from projector.webhooks.order import Plan, plan


def row(
    ident: int,
    aggregate: str,
    *,
    attempts: int = 0,
    wait_s: float = 0.0,
    status: str = "PENDING",
    subscription: str = "ACTIVE",
    parked: bool = False,
) -> dict[str, Any]:
    return {
        "delivery_id": ident,
        "aggregate_id": aggregate,
        "status": status,
        "attempts": attempts,
        "wait_s": wait_s,
        "subscription_status": subscription,
        "parked": parked,
    }


def test_nothing_pending_and_held_subscriptions() -> None:
    assert plan([], set(), 8) == Plan(empty=True)
    assert plan([row(1, "a", parked=True)], set(), 8) == Plan(held=True)
    assert plan([row(1, "a", subscription="DISABLED")], set(), 8) == Plan(held=True)


def test_one_delivery_per_aggregate_in_log_order_up_to_the_free_slots() -> None:
    rows = [row(1, "a"), row(2, "a"), row(3, "b"), row(4, "c"), row(5, "b"), row(6, "d")]
    assert plan(rows, set(), 8).send == [1, 3, 4, 6]
    assert plan(rows, set(), 2).send == [1, 3]
    # in flight: its aggregate's later deliveries wait; others fill the free slots
    assert plan(rows, {1, 3}, 6).send == [4, 6]


def test_a_delivery_waiting_for_its_time_holds_back_its_aggregate_only() -> None:
    rows = [row(1, "a", wait_s=2.5), row(2, "a"), row(3, "b"), row(4, "c", wait_s=0.4)]
    assert plan(rows, set(), 8) == Plan(send=[3], due_in_s=0.4)


def test_a_delivery_being_retried_holds_back_everything_after_it() -> None:
    rows = [row(1, "a"), row(2, "b", attempts=1, wait_s=1.0), row(3, "c"), row(4, "d")]
    assert plan(rows, set(), 8) == Plan(send=[1], due_in_s=1.0)
    assert plan(rows, {1}, 8) == Plan(send=[], due_in_s=1.0)
    due = [row(2, "b", attempts=3), row(3, "c")]
    assert plan(due, set(), 8).send == [2]
    assert plan(due, {2}, 8).send == []  # its retry in flight: still alone


def test_a_failed_delivery_stops_the_queue() -> None:
    rows = [row(1, "a", status="FAILED"), row(2, "b")]
    assert plan(rows, set(), 8).send == []
