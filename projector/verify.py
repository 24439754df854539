"""Comparing every consumer with the write model, document by document, field by field.

The write model is read in one REPEATABLE READ snapshot with the same queries
the read server's SOURCE_WRITE_MODEL uses (:mod:`common.write_model_queries`).
Each projection must hold exactly those documents (versions and timestamps
included), plus whatever its store checks besides (Redis: the index memberships
the documents imply; PostgreSQL orders: ``items_count``).

Meaningful on a quiescent system: a consumer that is behind is reported (its
differences may just be lag).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TextIO

import asyncpg
from google.protobuf.message import Message

from common import documents, write_model_queries
from projector.consumer import Consumer
from projector.errors import StoreLost
from projector.outbox import count_after

_LAG_CAP = 1_000_000


async def write_model(pool: asyncpg.Pool) -> dict[str, dict[str, Message]]:
    """Documents of the write model per family (``products`` etc.) from one snapshot."""
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        products = await conn.fetch(
            write_model_queries.all_live(
                write_model_queries.PRODUCTS, write_model_queries.PRODUCTS_LIVE
            )
        )
        customers = await conn.fetch(
            write_model_queries.all_live(
                write_model_queries.CUSTOMERS, write_model_queries.CUSTOMERS_LIVE
            )
        )
        orders = await conn.fetch(
            write_model_queries.all_live(
                write_model_queries.ORDERS, write_model_queries.ORDERS_LIVE
            )
        )
    return {
        "products": {str(r["id"]): documents.product_from_row(r) for r in products},
        "customers": {str(r["id"]): documents.customer_from_row(r) for r in customers},
        "orders": {str(r["id"]): documents.order_from_row(r) for r in orders},
    }


async def verify(
    consumers: Sequence[Consumer], pool: asyncpg.Pool, *, out: TextIO | None = None
) -> int:
    """Print every difference between the consumers and the write model; return how many."""
    out = out if out is not None else sys.stdout
    expected = await write_model(pool)
    total = 0
    for consumer in consumers:
        audit = await consumer.audit(expected)
        if audit is None:
            continue
        lines = audit.differences
        for line in lines:
            print(f"{consumer.name} {line}", file=out)
        if lines:
            try:
                checkpoint = await consumer.checkpoint()
            except StoreLost as exc:
                print(f"note: {consumer.name} is not built ({exc.why})", file=out)
            else:
                behind = await count_after(
                    pool, checkpoint, consumer.consumes, _LAG_CAP, consumer.event_types
                )
                if behind:
                    print(f"note: {consumer.name} is {behind} events behind the log", file=out)
        print(f"{consumer.name}: {audit.documents} documents, {len(lines)} differences", file=out)
        total += len(lines)
    print(f"verify: {total} differences" if total else "verify: all projections match", file=out)
    return total
