"""What must hold after a fault.

- the projections catch up with the last command and equal the write model
  (:func:`settle`, :func:`verify`);
- every command that was answered OK took effect, in exactly one transaction, and
  asking again with the same ``request_id`` returns exactly the same reply;
- no order is partial: its row, its items and its OrderPlaced event agree;
- every product's stock and version are what its events say.
"""

from __future__ import annotations

from typing import Any

import asyncpg
import grpc

from common.pb.shop.v1 import command_service_pb2_grpc as cpb_grpc
from common.pb.shop.v1 import query_service_pb2_grpc as qpb_grpc
from tests.faults.load import CommandLoad, wait_visible
from tests.support.system import System


async def settle(system: System, read: qpb_grpc.QueryServiceStub, token: str) -> None:
    """Until every projection has applied ``token``; explains itself if one never does."""
    try:
        await wait_visible(read, token)
    except grpc.aio.AioRpcError as exc:
        raise AssertionError(f"{exc.details()}\n{system.explain()}") from exc


def verify(system: System) -> None:
    """``cqrs projector verify``: every projection equals the write model."""
    done = system.cqrs("projector", "verify")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


async def assert_ok_replies_took_effect_once(
    db: asyncpg.Connection, write: cpb_grpc.CommandServiceStub, load: CommandLoad
) -> None:
    rows = await db.fetch(
        "SELECT metadata->>'request_id' AS request_id, count(DISTINCT xid) AS transactions "
        "FROM events WHERE metadata ? 'request_id' GROUP BY 1"
    )
    transactions = {r["request_id"]: r["transactions"] for r in rows}
    assert load.ok, "no command succeeded"
    for method, request, reply in load.ok:
        assert transactions.get(request.request_id) == 1, (method, request.request_id)
        # The channel may still be reconnecting to a restarted server: wait for it.
        again = await getattr(write, method)(request, timeout=30, wait_for_ready=True)
        assert again == reply, f"{method} {request.request_id}: retry answered {again}, not {reply}"
        exists = await db.fetchval(
            "SELECT count(*) FROM events WHERE aggregate_id = $1::uuid AND aggregate_version = $2",
            reply.id,
            reply.version,
        )
        assert exists == 1, f"{method} {reply.id} v{reply.version} has no event"


async def assert_no_partial_order(db: asyncpg.Connection) -> None:
    orders = await db.fetch(
        """
        SELECT o.id, o.total_cents,
               (SELECT count(*) FROM order_items i WHERE i.order_id = o.id) AS items,
               (SELECT coalesce(sum(line_total_cents), 0) FROM order_items i
                 WHERE i.order_id = o.id) AS lines_total,
               (SELECT jsonb_array_length(e.payload->'items') FROM events e
                 WHERE e.aggregate_id = o.id AND e.event_type = 'OrderPlaced') AS placed_items,
               (SELECT count(*) FROM events e WHERE e.event_type = 'ProductStockReserved'
                 AND e.payload->>'order_id' = o.id::text) AS reservations
        FROM orders o
        """
    )
    assert orders, "no orders at all"
    for o in orders:
        assert o["items"] == o["placed_items"] == o["reservations"] > 0, dict(o)
        assert o["lines_total"] == o["total_cents"], dict(o)
    placed_without_row = await db.fetchval(
        "SELECT count(*) FROM events e WHERE e.event_type = 'OrderPlaced' "
        "AND NOT EXISTS (SELECT 1 FROM orders o WHERE o.id = e.aggregate_id)"
    )
    assert placed_without_row == 0


async def assert_stock_equals_the_events(db: asyncpg.Connection) -> None:
    rows = await db.fetch(
        """
        SELECT p.id, p.stock, p.version,
               (SELECT count(*) FROM events e WHERE e.aggregate_id = p.id) AS events,
               (SELECT (e.payload->>'stock')::int FROM events e WHERE e.aggregate_id = p.id
                 AND e.event_type IN ('ProductCreated', 'ProductStockReserved',
                                      'ProductStockReleased')
                 ORDER BY e.aggregate_version DESC LIMIT 1) AS last_stock,
               (SELECT (e.payload->>'stock')::int FROM events e WHERE e.aggregate_id = p.id
                 AND e.event_type = 'ProductCreated') AS initial,
               (SELECT coalesce(sum(CASE e.event_type WHEN 'ProductStockReserved'
                   THEN -(e.payload->>'quantity')::int ELSE (e.payload->>'quantity')::int END), 0)
                 FROM events e WHERE e.aggregate_id = p.id
                 AND e.event_type IN ('ProductStockReserved', 'ProductStockReleased')) AS moved
        FROM products p
        """
    )
    for r in rows:
        row: dict[str, Any] = dict(r)
        assert r["stock"] == r["last_stock"] == r["initial"] + r["moved"], row
        assert r["version"] == r["events"], row
