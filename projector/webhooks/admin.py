"""``cqrs webhooks redeliver``: FAILED deliveries back in their queue, in order."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from projector.webhooks import tables as sql


@dataclass(frozen=True, slots=True)
class Redelivered:
    deliveries: int  # FAILED deliveries made PENDING again (attempts from zero)
    unparked: int  # subscriptions whose queue moves again


async def redeliver(
    pool: asyncpg.Pool | asyncpg.Connection,
    subscription_id: str | None = None,
    delivery_id: int | None = None,
) -> Redelivered:
    """Make FAILED deliveries PENDING again, with a fresh set of attempts, and unpark their
    subscriptions (all of them, one subscription's, or one delivery's). The running
    dispatcher sends them, still in log order, at its next look (within a poll)."""
    row = await pool.fetchrow(sql.REDELIVER, subscription_id, delivery_id)
    assert row is not None
    return Redelivered(int(row["deliveries"]), int(row["unparked"]))


def parse_delivery_id(value: str) -> int:
    """``msg_42`` (the webhook-id) or ``42``; ValueError otherwise."""
    number = int(value.removeprefix("msg_"))
    if number < 1:
        raise ValueError(value)
    return number
