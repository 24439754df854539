"""The webhook RPCs of QueryService: from the projector's ``webhooks`` schema.

Subscriptions are listed newest first (the entities' keyset pages); a subscription's
deliveries in log order, the oldest first (keyset on the delivery id). A consistency
token from a webhook command waits for ``webhooks:fanout`` to have applied it. The
signing secret is not in that schema, and the reader role may not read the write
table that holds it.
"""

from __future__ import annotations

import uuid
from datetime import datetime

import asyncpg
import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from common.cursors import InvalidScopedToken, ScopedTokens, encode_page_token, sort_key
from common.errors import NotFound
from common.pb.shop.v1 import query_service_pb2 as qs
from common.pb.shop.v1 import webhooks_pb2 as wh
from read_server.reads import RpcMixin
from read_server.requests import RequestParser

_SUBSCRIPTIONS = """
SELECT s.id::text AS id, s.url, s.event_types, s.description, s.status, s.version,
       s.created_at, s.updated_at, s.parked_at,
       count(d.id) FILTER (WHERE d.status = 'PENDING') AS pending,
       count(d.id) FILTER (WHERE d.status = 'DELIVERED') AS delivered,
       count(d.id) FILTER (WHERE d.status = 'FAILED') AS failed
FROM webhooks.subscriptions s LEFT JOIN webhooks.deliveries d ON d.subscription_id = s.id
WHERE $1::timestamptz IS NULL OR (s.created_at, s.id) < ($1, $2::uuid)
GROUP BY s.id ORDER BY s.created_at DESC, s.id DESC LIMIT $3
"""
_DELIVERIES = """
SELECT id, subscription_id::text AS subscription_id, event_seq, event_type,
       aggregate_id::text AS aggregate_id, status, attempts, last_status, last_error,
       created_at, next_attempt_at, delivered_at
FROM webhooks.deliveries
WHERE subscription_id = $1::uuid AND id > $2 AND ($3::text IS NULL OR status = $3)
ORDER BY id LIMIT $4
"""
_EXISTS = "SELECT 1 FROM webhooks.subscriptions WHERE id = $1::uuid"

_SUB_STATUS = {"ACTIVE": wh.WEBHOOK_SUBSCRIPTION_STATUS_ACTIVE,
               "DISABLED": wh.WEBHOOK_SUBSCRIPTION_STATUS_DISABLED}  # fmt: skip
_DELIVERY_STATUS = {
    "PENDING": wh.WEBHOOK_DELIVERY_STATUS_PENDING,
    "DELIVERED": wh.WEBHOOK_DELIVERY_STATUS_DELIVERED,
    "FAILED": wh.WEBHOOK_DELIVERY_STATUS_FAILED,
}
_STATUS_NAMES = {v: k for k, v in _DELIVERY_STATUS.items()}
_DELIVERY_TOKENS = ScopedTokens("d1")  # keyset on the delivery id within one subscription


class WebhookRpcs(RpcMixin):
    """Mixin of :class:`read_server.servicer.QueryServicer`."""

    async def ListWebhookSubscriptions(
        self, request: qs.ListWebhookSubscriptionsRequest, context: grpc.aio.ServicerContext
    ) -> qs.ListWebhookSubscriptionsResponse:
        p = RequestParser()
        page = p.page(request.page_size, request.page_token)
        freshness = p.freshness(request.consistency_token, self._wait_budget(context))
        p.done()
        reads = self._reads
        await reads.read_model.ready("webhooks", freshness)
        after = page.after
        rows = await reads.pool.fetch(
            _SUBSCRIPTIONS,
            after.created_at if after else None,
            uuid.UUID(after.id) if after else None,
            page.size + 1,
        )
        more = len(rows) > page.size
        rows = rows[: page.size]
        reply = qs.ListWebhookSubscriptionsResponse(subscriptions=[_subscription(r) for r in rows])
        if more:
            last = rows[-1]
            reply.next_page_token = encode_page_token(sort_key(last["created_at"], last["id"]))
        return reply

    async def ListWebhookDeliveries(
        self, request: qs.ListWebhookDeliveriesRequest, context: grpc.aio.ServicerContext
    ) -> qs.ListWebhookDeliveriesResponse:
        p = RequestParser()
        sub_id = p.entity_id(request.subscription_id, "subscription_id")
        size = p.page_size(request.page_size)
        after = _delivery_after(p, request.page_token, sub_id)
        status: str | None = None
        if request.status != wh.WEBHOOK_DELIVERY_STATUS_UNSPECIFIED:
            status = _STATUS_NAMES.get(request.status)
            if status is None:
                p.bad("status", f"unknown delivery status {request.status}")
        freshness = p.freshness(request.consistency_token, self._wait_budget(context))
        p.done()
        reads = self._reads
        await reads.read_model.ready("webhooks", freshness)
        async with reads.pool.acquire() as conn:
            rows = await _deliveries(conn, sub_id, after, status, size + 1)
        more = len(rows) > size
        rows = rows[:size]
        reply = qs.ListWebhookDeliveriesResponse(deliveries=[_delivery(r) for r in rows])
        if more:
            reply.next_page_token = _DELIVERY_TOKENS.encode(sub_id, rows[-1]["id"])
        return reply


async def _deliveries(
    conn: asyncpg.Connection, sub_id: str, after: int, status: str | None, limit: int
) -> list[asyncpg.Record]:
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        if await conn.fetchval(_EXISTS, sub_id) is None:
            raise NotFound(f"webhook subscription {sub_id} not found")
        rows: list[asyncpg.Record] = await conn.fetch(_DELIVERIES, sub_id, after, status, limit)
        return rows


def _delivery_after(p: RequestParser, token: str, sub_id: str) -> int:
    """The delivery id a page token continues after (0: the first page)."""
    try:
        return _DELIVERY_TOKENS.decode(token, sub_id)
    except InvalidScopedToken:
        p.bad("page_token", "is not a page token issued by this server for this subscription")
        return 0


def _ts(value: datetime | None) -> Timestamp | None:
    if value is None:
        return None
    ts = Timestamp()
    ts.FromDatetime(value)
    return ts


def _subscription(r: asyncpg.Record) -> wh.WebhookSubscription:
    return wh.WebhookSubscription(
        id=r["id"],
        url=r["url"],
        event_types=list(r["event_types"]),
        description=r["description"],
        status=_SUB_STATUS.get(r["status"], wh.WEBHOOK_SUBSCRIPTION_STATUS_UNSPECIFIED),
        version=r["version"],
        created_at=_ts(r["created_at"]),
        updated_at=_ts(r["updated_at"]),
        parked_at=_ts(r["parked_at"]),
        pending_deliveries=r["pending"],
        delivered_deliveries=r["delivered"],
        failed_deliveries=r["failed"],
    )


def _delivery(r: asyncpg.Record) -> wh.WebhookDelivery:
    return wh.WebhookDelivery(
        id=f"msg_{r['id']}",
        subscription_id=r["subscription_id"],
        event_sequence=r["event_seq"],
        event_type=r["event_type"],
        aggregate_id=r["aggregate_id"],
        status=_DELIVERY_STATUS.get(r["status"], wh.WEBHOOK_DELIVERY_STATUS_UNSPECIFIED),
        attempts=r["attempts"],
        last_status_code=r["last_status"],
        last_error=r["last_error"],
        created_at=_ts(r["created_at"]),
        next_attempt_at=_ts(r["next_attempt_at"]) if r["status"] == "PENDING" else None,
        delivered_at=_ts(r["delivered_at"]),
    )
