"""Which of a subscription's deliveries may be sent now: the dispatcher's order rules.

A subscription's deliveries go out with bounded concurrency, in the order that matters:

- **per aggregate, strictly in log order**: a delivery is sent only once every earlier
  delivery of the same ``aggregate_id`` (same subscription) is DELIVERED, so two deliveries
  of one aggregate are never in flight together; deliveries of different aggregates may
  overlap and arrive in any order (a receiver orders them by ``data.sequence``, or per
  aggregate by ``data.aggregate_version``, and de-duplicates on ``webhook-id``);
- **a delivery being retried holds back everything after it**: once an attempt of a
  delivery failed, no later delivery of the subscription (any aggregate) starts until it is
  DELIVERED; the earlier ones already in flight finish. A failing receiver so gets one
  request at a time, and the log order is kept across an outage. A delivery postponed
  without a failure (an open breaker, a full pool) holds back only its own aggregate;
- **FAILED parks the whole subscription**: nothing more of it is sent until
  ``cqrs webhooks redeliver``;
- at most ``free`` more in flight (the subscription's cap minus those already sent).

:func:`plan` reads the front of the queue in log order (``tables.QUEUE``); it is pure, so
the rules are tested without a receiver.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from projector.webhooks.tables import ACTIVE, PENDING


@dataclass(frozen=True, slots=True)
class Plan:
    """What to do with one subscription's queue now."""

    send: list[int] = field(default_factory=list)  # deliveries to send now, in log order
    due_in_s: float | None = None  # when the soonest delivery waiting for its time is due
    held: bool = False  # parked or disabled: send nothing
    empty: bool = False  # nothing pending


def plan(rows: Sequence[Mapping[str, Any]], in_flight: Collection[int], free: int) -> Plan:
    """The deliveries of ``rows`` (the queue's front, in log order: delivery_id,
    aggregate_id, status, attempts, wait_s, subscription_status, parked) that may be sent
    now, besides ``in_flight``, at most ``free`` of them."""
    if not rows:
        return Plan(empty=True)
    if rows[0]["subscription_status"] != ACTIVE or rows[0]["parked"]:
        return Plan(held=True)
    send: list[int] = []
    due = math.inf
    seen: set[str] = set()  # aggregates whose oldest pending delivery is behind us
    for row in rows:
        if row["status"] != PENDING:
            break  # FAILED (its subscription is parked in the same transaction)
        aggregate = row["aggregate_id"]
        if aggregate in seen:
            continue  # waits for its aggregate's earlier delivery
        seen.add(aggregate)
        ident = int(row["delivery_id"])
        if ident not in in_flight:
            if row["wait_s"] > 0:
                due = min(due, float(row["wait_s"]))
            elif len(send) < free:
                send.append(ident)
        if row["attempts"] > 0:
            break  # being retried: holds back everything after it
    return Plan(send, None if due == math.inf else due)
