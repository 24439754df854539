"""Comparing every projection with the write model, document by document, field by field.

The write model is read in one REPEATABLE READ snapshot with the same queries
the read server's SOURCE_WRITE_MODEL uses (:mod:`common.write_model_queries`). Each of the six projections must hold
exactly those documents (versions and timestamps included); each Redis
projection must also hold exactly the index memberships those documents imply,
and ``order_read_model.items_count`` must match its items.

Meaningful on a quiescent system: a projection that is behind is reported (its
differences may just be lag).
"""

from __future__ import annotations

import sys
from typing import TextIO

import asyncpg
from google.protobuf.message import Message

from common import documents
from common import write_model_queries as q
from projector.bootstrap import Resources, make_store
from projector.compare import diff_documents
from projector.outbox import count_after
from projector.projections import (
    ALL_PROJECTIONS,
    ProjectionKind,
    member,
    parse_projection,
)
from projector.stores.pg_store import PgProjectionStore
from projector.stores.redis_store import RedisProjectionStore

_LAG_CAP = 1_000_000

_BAD_ITEMS_COUNT = """
SELECT id, items_count, jsonb_array_length(items) AS actual
FROM read.order_read_model WHERE items_count <> jsonb_array_length(items)
"""


async def write_model(pool: asyncpg.Pool) -> dict[str, dict[str, Message]]:
    """Documents of the write model per kind (``products`` etc.) from one snapshot."""
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        products = await conn.fetch(q.all_live(q.PRODUCTS, q.PRODUCTS_LIVE))
        customers = await conn.fetch(q.all_live(q.CUSTOMERS, q.CUSTOMERS_LIVE))
        orders = await conn.fetch(q.all_live(q.ORDERS, q.ORDERS_LIVE))
    return {
        "products": {str(r["id"]): documents.product_from_row(r) for r in products},
        "customers": {str(r["id"]): documents.customer_from_row(r) for r in customers},
        "orders": {str(r["id"]): documents.order_from_row(r) for r in orders},
    }


async def verify(resources: Resources, *, out: TextIO | None = None) -> int:
    """Print every difference between the projections and the write model; return how many."""
    out = out if out is not None else sys.stdout
    expected = await write_model(resources.pool)
    total = 0
    for projection in ALL_PROJECTIONS:
        _, kind = parse_projection(projection)
        store = make_store(resources, projection)
        actual = await store.all_documents()
        found = compare_documents(projection, expected[kind.name], actual, out)
        if isinstance(store, RedisProjectionStore):
            found += compare_indexes(
                projection, kind, expected[kind.name], await store.index_members(), out
            )
        if isinstance(store, PgProjectionStore) and kind.name == "orders":
            for row in await resources.pool.fetch(_BAD_ITEMS_COUNT):
                print(
                    f"{projection} {row['id']}: items_count: projection={row['items_count']} "
                    f"items={row['actual']}",
                    file=out,
                )
                found += 1
        if found:
            behind = await count_after(
                resources.pool, await store.checkpoint(), kind.consumes, _LAG_CAP
            )
            if behind:
                print(f"note: {projection} is {behind} events behind the log", file=out)
        print(f"{projection}: {len(actual)} documents, {found} differences", file=out)
        total += found
    print(f"verify: {total} differences" if total else "verify: all projections match", file=out)
    return total


def compare_documents(
    projection: str, expected: dict[str, Message], actual: dict[str, Message], out: TextIO
) -> int:
    """Print and count missing, extra and differing documents."""
    found = 0
    for doc_id in sorted(expected.keys() | actual.keys()):
        want, got = expected.get(doc_id), actual.get(doc_id)
        if got is None:
            print(f"{projection} {doc_id}: missing (exists in the write model)", file=out)
            found += 1
        elif want is None:
            print(f"{projection} {doc_id}: extra (not in the write model)", file=out)
            found += 1
        else:
            for diff in diff_documents(got, want):
                print(
                    f"{projection} {doc_id}: {diff.path}: projection={diff.actual} "
                    f"write model={diff.expected}",
                    file=out,
                )
                found += 1
    return found


def compare_indexes(
    projection: str,
    kind: ProjectionKind,
    expected_docs: dict[str, Message],
    actual: dict[str, set[str]],
    out: TextIO,
) -> int:
    """Print and count index memberships that differ from what the documents imply."""
    expected: dict[str, set[str]] = {}
    for doc in expected_docs.values():
        for suffix in kind.index_keys(doc):
            expected.setdefault(suffix, set()).add(member(doc))
    found = 0
    for suffix in sorted(expected.keys() | actual.keys()):
        want, got = expected.get(suffix, set()), actual.get(suffix, set())
        for m in sorted(want - got):
            print(f"{projection} idx:{suffix}: missing member {m}", file=out)
            found += 1
        for m in sorted(got - want):
            print(f"{projection} idx:{suffix}: extra member {m}", file=out)
            found += 1
    return found
