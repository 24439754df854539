"""shop.v1.QueryService: validate, pick the source, return wire bytes.

One ``async def`` per RPC, named like it. Every method returns the serialized
response (a stored document for gets, a concatenation for lists, see
:mod:`read_server.wire`), which the server passes through unchanged.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import grpc

from common.cursors import SortKey, encode_page_token
from common.errors import NotFound
from common.pb.shop.v1 import query_service_pb2 as qs
from read_server.analytics.rpcs import AnalyticsRpcs
from read_server.deadlines import wait_budget
from read_server.history.rpcs import HistoryRpcs
from read_server.reads import Reads
from read_server.requests import RequestParser
from read_server.search.rpcs import SearchRpcs
from read_server.sources.base import Freshness, OrderFilter, Page, SourceSet
from read_server.webhooks.rpcs import WebhookRpcs
from read_server.wire import list_response

_GetRequest = qs.GetProductRequest | qs.GetCustomerRequest | qs.GetOrderRequest


class QueryServicer(HistoryRpcs, AnalyticsRpcs, SearchRpcs, WebhookRpcs):
    """Thin async handlers: the entity reads here over a :class:`SourceSet`; the event
    history, analytics and search RPCs come from their mixins (one module each)."""

    def __init__(
        self, sources: SourceSet, consistency_wait_max_ms: int, reads: Reads | None = None
    ) -> None:
        self._sources = sources
        self._max_wait_s = consistency_wait_max_ms / 1000
        # Only the entity reads work without ``reads`` (unit tests over fake sources).
        self._maybe_reads = reads

    @property
    def _reads(self) -> Reads:
        if self._maybe_reads is None:
            raise RuntimeError("this servicer was built without PostgreSQL reads")
        return self._maybe_reads

    def _wait_budget(self, context: grpc.aio.ServicerContext) -> float:
        return wait_budget(context, self._max_wait_s)

    async def _get(
        self, request: _GetRequest, context: grpc.aio.ServicerContext, kind: str
    ) -> bytes:
        """GetProduct, GetCustomer, GetOrder: ``kind`` names the entity (and the getter)."""
        p = RequestParser()
        ident = p.entity_id(request.id)
        source = p.source(request.source, self._sources)
        freshness = p.freshness(request.consistency_token, self._wait_budget(context))
        p.done()
        getter: Callable[[str, Freshness], Awaitable[bytes | None]] = getattr(source, f"get_{kind}")
        return _found(await getter(ident, freshness), kind, ident)

    async def GetProduct(
        self, request: qs.GetProductRequest, context: grpc.aio.ServicerContext
    ) -> bytes:
        return await self._get(request, context, "product")

    async def ListProducts(
        self, request: qs.ListProductsRequest, context: grpc.aio.ServicerContext
    ) -> bytes:
        p = RequestParser()
        page = p.page(request.page_size, request.page_token)
        source = p.source(request.source, self._sources)
        freshness = p.freshness(request.consistency_token, self._wait_budget(context))
        p.done()
        category = request.category or None
        return _list(await source.list_products(page, category, freshness))

    async def GetCustomer(
        self, request: qs.GetCustomerRequest, context: grpc.aio.ServicerContext
    ) -> bytes:
        return await self._get(request, context, "customer")

    async def ListCustomers(
        self, request: qs.ListCustomersRequest, context: grpc.aio.ServicerContext
    ) -> bytes:
        p = RequestParser()
        page = p.page(request.page_size, request.page_token)
        source = p.source(request.source, self._sources)
        freshness = p.freshness(request.consistency_token, self._wait_budget(context))
        p.done()
        return _list(await source.list_customers(page, freshness))

    async def GetOrder(
        self, request: qs.GetOrderRequest, context: grpc.aio.ServicerContext
    ) -> bytes:
        return await self._get(request, context, "order")

    async def ListOrders(
        self, request: qs.ListOrdersRequest, context: grpc.aio.ServicerContext
    ) -> bytes:
        p = RequestParser()
        page = p.page(request.page_size, request.page_token)
        order_filter = OrderFilter(
            customer_id=p.optional_id(request.customer_id, "customer_id"),
            status=p.status(request.status),
        )
        source = p.source(request.source, self._sources)
        freshness = p.freshness(request.consistency_token, self._wait_budget(context))
        p.done()
        return _list(await source.list_orders(page, order_filter, freshness))


def _found(doc: bytes | None, kind: str, ident: str) -> bytes:
    if doc is None:
        raise NotFound(f"{kind} {ident} not found")
    return doc


def _next_token(key: SortKey | None) -> str:
    return "" if key is None else encode_page_token(key)


def _list(page: Page) -> bytes:
    return list_response(page.items, _next_token(page.next_key))
