"""GetAggregateHistory and Get*AsOf (QueryService): the event log as clients see it.

Both read the ``events`` table itself (the truth, not a projection), so they need no
consistency token: a command's events are there once the command has replied. What one
call may cost is bounded (:mod:`read_server.history.limits`).
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from common import events as ev
from common.documents import to_datetime
from common.errors import FailedPrecondition, NotFound
from common.event_log import LoggedEvent, created_at, history_page
from common.pb.shop.v1 import history_pb2 as hpb
from common.pb.shop.v1 import query_service_pb2 as qs
from common.pb.shop.v1 import shop_pb2
from read_server.history.as_of import Replayed, TooManyEvents, as_of
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
# Rows read from the table at a time while filling a page: a page that ends early on its
# byte bound never read the rest of page_size.
FETCH_ROWS = 100
# What a repeated message field adds to an element's own size: its tag and length.
_FIELD_OVERHEAD = 6


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
        reads = self._reads  # one database for the whole request
        pool = reads.pool
        page = _Page(size, reads.history.page_max_bytes)
        version = after
        while True:
            wanted = min(size - len(page.events), FETCH_ROWS) + 1
            found = await history_page(pool, ident, kind, version, wanted)
            first = not page.events
            if first and not found and (after == 0 or await created_at(pool, kind, ident) is None):
                raise NotFound(f"{kind.lower()} {ident} has no events")
            taken = page.take(found)
            if taken < len(found) or len(found) < wanted:
                break  # the page is full, or the history ends here
            version = found[-1].event.aggregate_version
        return qs.GetAggregateHistoryResponse(
            events=page.events,
            next_page_token=encode_history_token(ident, page.last) if page.more else "",
        )

    async def GetProductAsOf(
        self, request: qs.GetProductAsOfRequest, context: grpc.aio.ServicerContext
    ) -> shop_pb2.Product:
        found = await self._as_of(request, context, ev.PRODUCT)
        assert isinstance(found, shop_pb2.Product)
        return found

    async def GetCustomerAsOf(
        self, request: qs.GetCustomerAsOfRequest, context: grpc.aio.ServicerContext
    ) -> shop_pb2.Customer:
        found = await self._as_of(request, context, ev.CUSTOMER)
        assert isinstance(found, shop_pb2.Customer)
        return found

    async def GetOrderAsOf(
        self, request: qs.GetOrderAsOfRequest, context: grpc.aio.ServicerContext
    ) -> shop_pb2.Order:
        found = await self._as_of(request, context, ev.ORDER)
        assert isinstance(found, shop_pb2.Order)
        return found

    async def _as_of(
        self, request: _AsOfRequest, context: grpc.aio.ServicerContext, kind: str
    ) -> shop_pb2.Product | shop_pb2.Customer | shop_pb2.Order:
        p = RequestParser()
        ident = p.entity_id(request.id)
        at = as_of_time(p, request.as_of if request.HasField("as_of") else None)
        p.done()
        name = kind.lower()
        reads = self._reads  # one database for the whole request
        limits = reads.history
        async with (
            limits.replay_turn(self._wait_budget(context)),
            reads.pool.acquire() as conn,
            # One snapshot: an order reads its own events and then its customer's.
            conn.transaction(isolation="repeatable_read", readonly=True),
        ):
            try:
                replayed: Replayed = await as_of(conn, kind, ident, at, limits.as_of_max_events)
            except TooManyEvents as exc:
                raise FailedPrecondition(
                    f"{exc.aggregate_type.lower()} {exc.ident} has more than {exc.limit} events"
                    f" up to {iso(at)}: time travel replays at most {exc.limit} events of an"
                    " aggregate per call"
                ) from None
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


class _Page:
    """History events of one page: at most ``size`` of them, and no more bytes than
    ``max_bytes`` encoded (but always one, so that paging moves on)."""

    def __init__(self, size: int, max_bytes: int) -> None:
        self.events: list[hpb.HistoryEvent] = []
        self.last = 0  # version of the last event on the page
        self.more = False  # events follow the page
        self._size = size
        self._room = max_bytes if max_bytes > 0 else sys.maxsize  # 0: no byte bound

    def take(self, found: list[LoggedEvent]) -> int:
        """Add events of ``found`` while they fit; how many were added."""
        for taken, logged in enumerate(found):
            message = history_event(logged)
            cost = message.ByteSize() + _FIELD_OVERHEAD
            if len(self.events) == self._size or (self.events and cost > self._room):
                self.more = True
                return taken
            self.events.append(message)
            self._room -= cost
            self.last = logged.event.aggregate_version
        return len(found)


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
