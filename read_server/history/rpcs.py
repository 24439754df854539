"""GetAggregateHistory and Get*AsOf (QueryService): the event log as clients see it.

Both read the ``events`` table itself (the truth, not a projection), so they need no
consistency token: a command's events are there once the command has replied.
"""

from __future__ import annotations

from datetime import UTC, datetime

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from common import events as ev
from common.documents import to_datetime
from common.errors import NotFound
from common.event_log import created_at, history_page
from common.pb.shop.v1 import history_pb2 as hpb
from common.pb.shop.v1 import query_service_pb2 as qs
from common.pb.shop.v1 import shop_pb2
from read_server.history.as_of import Replayed, as_of
from read_server.history.paging import (
    InvalidHistoryToken,
    decode_history_token,
    encode_history_token,
)
from read_server.history.payloads import history_event
from read_server.reads import RpcMixin
from read_server.requests import RequestParser

AGGREGATE_TYPES: dict[int, str] = {
    hpb.AGGREGATE_TYPE_PRODUCT: ev.PRODUCT,
    hpb.AGGREGATE_TYPE_CUSTOMER: ev.CUSTOMER,
    hpb.AGGREGATE_TYPE_ORDER: ev.ORDER,
    hpb.AGGREGATE_TYPE_WEBHOOK_SUBSCRIPTION: ev.WEBHOOK_SUBSCRIPTION,
}
# The range of google.protobuf.Timestamp (0001-01-01 .. 9999-12-31, UTC).
_MIN_SECONDS, _MAX_SECONDS = -62_135_596_800, 253_402_300_799
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

_AsOfRequest = qs.GetProductAsOfRequest | qs.GetCustomerAsOfRequest | qs.GetOrderAsOfRequest


class HistoryRpcs(RpcMixin):
    """Mixin of :class:`read_server.servicer.QueryServicer`."""

    async def GetAggregateHistory(
        self, request: qs.GetAggregateHistoryRequest, context: grpc.aio.ServicerContext
    ) -> qs.GetAggregateHistoryResponse:
        p = RequestParser()
        kind = aggregate_type(p, request.aggregate_type)
        ident = p.entity_id(request.aggregate_id, "aggregate_id")
        size = p.page_size(request.page_size)
        after = 0
        try:
            after = decode_history_token(request.page_token, ident)
        except InvalidHistoryToken:
            p.bad("page_token", "is not a page token issued by this server for this aggregate")
        p.done()
        pool = self._reads.pool
        found = await history_page(pool, ident, kind, after, size + 1)
        if not found and (after == 0 or await created_at(pool, kind, ident) is None):
            raise NotFound(f"{kind.lower()} {ident} has no events")
        page = found[:size]
        more = len(found) > size
        return qs.GetAggregateHistoryResponse(
            events=[history_event(e) for e in page],
            next_page_token=(
                encode_history_token(ident, page[-1].event.aggregate_version) if more else ""
            ),
        )

    async def GetProductAsOf(
        self, request: qs.GetProductAsOfRequest, context: grpc.aio.ServicerContext
    ) -> shop_pb2.Product:
        found = await self._as_of(request, ev.PRODUCT)
        assert isinstance(found, shop_pb2.Product)
        return found

    async def GetCustomerAsOf(
        self, request: qs.GetCustomerAsOfRequest, context: grpc.aio.ServicerContext
    ) -> shop_pb2.Customer:
        found = await self._as_of(request, ev.CUSTOMER)
        assert isinstance(found, shop_pb2.Customer)
        return found

    async def GetOrderAsOf(
        self, request: qs.GetOrderAsOfRequest, context: grpc.aio.ServicerContext
    ) -> shop_pb2.Order:
        found = await self._as_of(request, ev.ORDER)
        assert isinstance(found, shop_pb2.Order)
        return found

    async def _as_of(
        self, request: _AsOfRequest, kind: str
    ) -> shop_pb2.Product | shop_pb2.Customer | shop_pb2.Order:
        p = RequestParser()
        ident = p.entity_id(request.id)
        at = as_of_time(p, request.as_of if request.HasField("as_of") else None)
        p.done()
        name = kind.lower()
        async with (
            self._reads.pool.acquire() as conn,
            # One snapshot: an order reads its own events and then its customer's.
            conn.transaction(isolation="repeatable_read", readonly=True),
        ):
            replayed: Replayed = await as_of(conn, kind, ident, at)
            if replayed.document is not None:
                document = replayed.document
                assert isinstance(document, shop_pb2.Product | shop_pb2.Customer | shop_pb2.Order)
                return document
            if replayed.deleted_at is not None:
                raise NotFound(
                    f"{name} {ident} was deleted at {iso(replayed.deleted_at)} (as of {iso(at)})"
                )
            created = await created_at(conn, kind, ident)
        if created is None:
            raise NotFound(f"{name} {ident} not found")
        raise NotFound(f"{name} {ident} did not exist yet at {iso(at)} (created {iso(created)})")


def aggregate_type(p: RequestParser, value: int) -> str:
    """The stored ``aggregate_type`` for a request's enum value."""
    if value == hpb.AGGREGATE_TYPE_UNSPECIFIED:
        p.bad("aggregate_type", "is required (PRODUCT, CUSTOMER or ORDER)")
        return ev.PRODUCT
    kind = AGGREGATE_TYPES.get(value)
    if kind is None:
        p.bad("aggregate_type", f"unknown aggregate type {value}")
        return ev.PRODUCT
    return kind


def as_of_time(p: RequestParser, value: Timestamp | None) -> datetime:
    """A required, valid timestamp (truncated to microseconds, as PostgreSQL stores
    times: an event at .000001 s is after an as_of of .0000009 s, and still is)."""
    if value is None:
        p.bad("as_of", "is required")
        return _EPOCH
    if not (_MIN_SECONDS <= value.seconds <= _MAX_SECONDS and 0 <= value.nanos < 1_000_000_000):
        p.bad("as_of", "must be a valid timestamp between 0001-01-01 and 9999-12-31")
        return _EPOCH
    return to_datetime(value)


def iso(value: datetime) -> str:
    """RFC 3339 in UTC with a ``Z``, as grpcurl shows timestamps."""
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
