"""``cqrs webhooks redeliver [--subscription ID] [--delivery MSG_ID]``."""

from __future__ import annotations

import sys
import uuid

import asyncpg

from common.settings import Settings
from projector.webhooks.admin import parse_delivery_id
from projector.webhooks.admin import redeliver as redeliver_failed


async def redeliver(settings: Settings, subscription: str | None, delivery: str | None) -> int:
    """Print what was put back in the queues; 2 for a malformed id."""
    try:
        sub_id = str(uuid.UUID(subscription)) if subscription else None
        delivery_id = parse_delivery_id(delivery) if delivery else None
    except ValueError:
        print("--subscription takes a UUID, --delivery msg_<n> or <n>", file=sys.stderr)
        return 2
    conn = await asyncpg.connect(settings.asyncpg_dsn)
    try:
        done = await redeliver_failed(conn, sub_id, delivery_id)
    finally:
        await conn.close()
    print(
        f"{done.deliveries} FAILED deliveries queued again; {done.unparked} subscriptions unparked"
    )
    return 0
