"""``webhooks:fanout``: turns the event log into delivery rows, one per subscription.

One PostgreSQL transaction per batch: lock and compare the checkpoint row, fold the
subscriptions' own events (created, disabled, secret rotated) into
``webhooks.subscriptions`` in log order, add a delivery for every other event and every
subscription that was active at that point of the log and wants its type, and move the
checkpoint. So which subscription receives which event is decided by the log alone,
every delivery row exists exactly once (``UNIQUE (subscription_id, event_seq)``), and
the rows and the checkpoint are always in step.

It sends nothing itself (the dispatcher does), so it never waits on an endpoint. It is
not rebuilt: a rebuild would create every past delivery again. A first start (no
checkpoint row) begins at the origin, where no subscription exists yet.

It can be rewound (:meth:`WebhookFanout.rewind`, ``cqrs projector rebuild --from``): the
deliveries it made for the events after the position are queued again, with their
``webhook-id``, and it goes over those events again. Reading a batch again is harmless: a
delivery exists once per (subscription, event), the subscriptions' own events only move
their rows forward, and a subscription created later in the log than an event is never given
it (the batch knows where each active subscription was created), although its row exists.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from common import events as ev
from common.events import StoredEvent
from common.positions import ORIGIN, Position
from projector.errors import PoisonEvent
from projector.outbound import Outbound
from projector.outbox import Batch
from projector.rewind import Rewound
from projector.stores import pg_checkpoints
from projector.webhooks import tables as sql

NAME = "webhooks:fanout"


@dataclass(frozen=True, slots=True)
class _Active:
    """An active subscription as a batch sees it."""

    wanted: tuple[str, ...]  # the event types it receives (empty: all)
    since: Position  # its creation event: it receives only the events after it

    def receives(self, event: StoredEvent) -> bool:
        return event.position > self.since and (not self.wanted or event.event_type in self.wanted)


class WebhookFanout(Outbound):
    """The consumer; ``on_deliveries`` is called after a batch that added deliveries (to
    wake the dispatcher in this process without waiting for its poll)."""

    not_rebuilt_because = "a rebuild would deliver every past event again"
    # A delivery queued up to 0.1 s later: receivers live with retries seconds apart.
    linger_s = 0.1

    def __init__(self, pool: asyncpg.Pool, on_deliveries: Callable[[], None] | None = None) -> None:
        self._pool = pool
        self._on_deliveries = on_deliveries

    @property
    def name(self) -> str:
        return NAME

    @property
    def consumes(self) -> tuple[str, ...]:
        return ev.AGGREGATE_TYPES

    @property
    def event_types(self) -> None:
        return None

    async def apply(self, batch: Batch) -> None:
        if not batch.events:  # the horizon moved: the checkpoint alone, one statement
            await self._advance(self._pool, batch)
            return
        async with self._pool.acquire() as conn, conn.transaction():
            added = await self._apply(conn, batch)
        if added and self._on_deliveries is not None:
            self._on_deliveries()

    async def _apply(self, conn: asyncpg.Connection, batch: Batch) -> int:
        await self._advance(conn, batch)
        active = {
            r["id"]: _Active(
                tuple(r["event_types"]),
                ORIGIN if r["seq"] is None else Position(r["xid"], r["seq"]),
            )
            for r in await conn.fetch(sql.ACTIVE_SUBSCRIPTIONS, ev.WEBHOOK_SUBSCRIPTION_CREATED)
        }
        subs: list[str] = []
        seqs: list[int] = []
        types: list[str] = []
        aggregates: list[str] = []
        for event in batch.events:
            if event.aggregate_type == ev.WEBHOOK_SUBSCRIPTION:
                await _fold_subscription(conn, event, active)
                continue
            for sub_id, subscription in active.items():
                if subscription.receives(event):
                    subs.append(sub_id)
                    seqs.append(event.seq)
                    types.append(event.event_type)
                    aggregates.append(event.aggregate_id)
        if subs:
            await conn.execute(sql.ADD_DELIVERIES, subs, seqs, types, aggregates)
        return len(subs)

    async def rewind(self, to: Position) -> Rewound:
        """Deliver the events after ``to`` again: in one transaction, queue again the
        deliveries made for them to the subscriptions still active (sent or failed ones:
        PENDING, attempts from 0, the same ``webhook-id``, so a receiver that kept it drops
        the copy; a subscription parked only by one of them is unparked) and move the
        checkpoint back to ``to``. Going over those events again adds no delivery (see the
        module's docstring). A disabled subscription gets nothing again."""
        async with self._pool.acquire() as conn, conn.transaction():
            previous = await pg_checkpoints.move_back(conn, NAME, to)
            again = int(await conn.fetchval(sql.REWIND, to.xid, to.seq))
        if again and self._on_deliveries is not None:
            self._on_deliveries()
        return Rewound(previous, f"{again} deliveries queued again, each with its webhook-id")

    async def describe(self) -> str:
        await self.checkpoint()
        row = await self._pool.fetchrow(sql.SUMMARY)
        assert row is not None
        return (
            f"{row['active']} active subscriptions ({row['parked']} parked); deliveries: "
            f"{row['pending']} pending, {row['failed']} failed, {row['delivered']} delivered"
        )


async def _fold_subscription(
    conn: asyncpg.Connection, event: StoredEvent, active: dict[str, _Active]
) -> None:
    """Apply one of a subscription's own events to ``webhooks.subscriptions`` and to
    ``active`` (the batch's view of who receives the events that follow)."""
    p = event.payload
    at: datetime = event.occurred_at
    if event.event_type == ev.WEBHOOK_SUBSCRIPTION_CREATED:
        try:
            url, wanted, description = (
                str(p["url"]),
                [str(t) for t in p["event_types"]],
                str(p["description"]),
            )
        except (KeyError, TypeError) as exc:
            raise PoisonEvent(event, f"unreadable subscription payload: {exc!r}") from exc
        await conn.execute(
            sql.SUBSCRIPTION_CREATED, event.aggregate_id, url, wanted, description,
            event.aggregate_version, at,
        )  # fmt: skip
        active[event.aggregate_id] = _Active(tuple(wanted), event.position)
    elif event.event_type == ev.WEBHOOK_SUBSCRIPTION_DISABLED:
        await conn.execute(
            sql.SUBSCRIPTION_CHANGED, event.aggregate_id, event.aggregate_version, sql.DISABLED, at
        )
        active.pop(event.aggregate_id, None)
    elif event.event_type == ev.WEBHOOK_SECRET_ROTATED:
        await conn.execute(
            sql.SUBSCRIPTION_CHANGED, event.aggregate_id, event.aggregate_version, None, at
        )
    else:
        raise PoisonEvent(event, f"unknown webhook subscription event {event.event_type}")
