"""The analytics RPCs of QueryService: validate, pick the source, read one snapshot.

``source`` is SOURCE_READ_MODEL (the default: the projector's materialized tables,
which may lag; a consistency token waits for them) or SOURCE_WRITE_MODEL (computed
live, always current, slow). Every reply carries the freshness of its figures.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from datetime import date
from typing import TypeVar

import asyncpg
import grpc

from common.errors import NotFound
from common.pb.shop.v1 import analytics_pb2 as an
from common.pb.shop.v1 import query_service_pb2 as qs
from read_server.analytics.sources import AnalyticsSource, LiveAnalytics, MaterializedAnalytics
from read_server.reads import RpcMixin
from read_server.requests import RequestParser
from read_server.sources.base import Freshness

T = TypeVar("T")

DEFAULT_LIMIT, MAX_LIMIT = 10, 100
MAX_MONTHS = 120
_CURRENCY = re.compile(r"[A-Z]{3}")
_MONTH = re.compile(r"([0-9]{4})-([0-9]{2})")
_MATERIALIZED = MaterializedAnalytics()
_LIVE = LiveAnalytics()


class AnalyticsRpcs(RpcMixin):
    """Mixin of :class:`read_server.servicer.QueryServicer`."""

    async def GetCustomerStats(
        self, request: qs.GetCustomerStatsRequest, context: grpc.aio.ServicerContext
    ) -> an.CustomerStats:
        p = RequestParser()
        ident = p.entity_id(request.customer_id, "customer_id")
        source, freshness = self._analytics_source(p, request, context)
        found, fresh = await self._snapshot(
            source, freshness, lambda conn: source.customer_stats(conn, ident)
        )
        if found is None:
            raise NotFound(f"customer {ident} not found")
        found.freshness.CopyFrom(fresh)
        return found

    async def GetProductSalesStats(
        self, request: qs.GetProductSalesStatsRequest, context: grpc.aio.ServicerContext
    ) -> an.ProductSalesStats:
        p = RequestParser()
        ident = p.entity_id(request.product_id, "product_id")
        source, freshness = self._analytics_source(p, request, context)
        found, fresh = await self._snapshot(
            source, freshness, lambda conn: source.product_sales(conn, ident)
        )
        if found is None:
            raise NotFound(f"product {ident} not found")
        found.freshness.CopyFrom(fresh)
        return found

    async def ListTopProducts(
        self, request: qs.ListTopProductsRequest, context: grpc.aio.ServicerContext
    ) -> qs.ListTopProductsResponse:
        p = RequestParser()
        limit = _limit(p, request.limit)
        currency = _currency(p, request.currency)
        if request.by not in an.TopProductsBy.values():
            p.bad("by", f"unknown ranking {request.by}")
        by_units = request.by == an.TOP_PRODUCTS_BY_UNITS
        source, freshness = self._analytics_source(p, request, context)
        found, fresh = await self._snapshot(
            source, freshness, lambda conn: source.top_products(conn, by_units, limit, currency)
        )
        return qs.ListTopProductsResponse(products=found, freshness=fresh)

    async def ListTopCustomers(
        self, request: qs.ListTopCustomersRequest, context: grpc.aio.ServicerContext
    ) -> qs.ListTopCustomersResponse:
        p = RequestParser()
        limit = _limit(p, request.limit)
        currency = _currency(p, request.currency)
        source, freshness = self._analytics_source(p, request, context)
        found, fresh = await self._snapshot(
            source, freshness, lambda conn: source.top_customers(conn, limit, currency)
        )
        return qs.ListTopCustomersResponse(customers=found, freshness=fresh)

    async def GetMonthlyRevenue(
        self, request: qs.GetMonthlyRevenueRequest, context: grpc.aio.ServicerContext
    ) -> qs.GetMonthlyRevenueResponse:
        p = RequestParser()
        first = _month(p, request.from_month, "from_month")
        last = _month(p, request.to_month, "to_month")
        if first and last:
            span = (last.year - first.year) * 12 + last.month - first.month
            if span < 0:
                p.bad("to_month", "must not be before from_month")
            elif span >= MAX_MONTHS:
                p.bad("to_month", f"at most {MAX_MONTHS} months from from_month")
        currency = _currency(p, request.currency)
        source, freshness = self._analytics_source(p, request, context)
        assert first is not None and last is not None
        found, fresh = await self._snapshot(
            source, freshness, lambda conn: source.months(conn, first, last, currency)
        )
        return qs.GetMonthlyRevenueResponse(months=found, freshness=fresh)

    # -- shared --------------------------------------------------------------------------------

    def _analytics_source(
        self, p: RequestParser, request: _AnalyticsRequest, context: grpc.aio.ServicerContext
    ) -> tuple[AnalyticsSource, Freshness]:
        """The source and freshness of a request; raises for every bad field found."""
        source: AnalyticsSource = _MATERIALIZED
        if request.source == qs.SOURCE_WRITE_MODEL:
            source = _LIVE
        elif request.source not in (qs.SOURCE_UNSPECIFIED, qs.SOURCE_READ_MODEL):
            p.bad("source", "analytics come from SOURCE_READ_MODEL or SOURCE_WRITE_MODEL")
        freshness = p.freshness(request.consistency_token, self._wait_budget(context))
        p.done()
        return source, freshness

    async def _snapshot(
        self,
        source: AnalyticsSource,
        freshness: Freshness,
        read: Callable[[asyncpg.Connection], Awaitable[T]],
    ) -> tuple[T, an.AnalyticsFreshness]:
        """``read`` and the source's freshness from one snapshot (after waiting, for the
        materialized tables, until they are built and have reached the token)."""
        reads = self._reads
        if source is _MATERIALIZED:
            await reads.read_model.ready("analytics", freshness)
        async with (
            reads.pool.acquire() as conn,
            conn.transaction(isolation="repeatable_read", readonly=True),
        ):
            found = await read(conn)
            return found, await source.freshness(conn)


_AnalyticsRequest = (
    qs.GetCustomerStatsRequest
    | qs.GetProductSalesStatsRequest
    | qs.ListTopProductsRequest
    | qs.ListTopCustomersRequest
    | qs.GetMonthlyRevenueRequest
)


def _limit(p: RequestParser, value: int) -> int:
    if value == 0:
        return DEFAULT_LIMIT
    if not 0 < value <= MAX_LIMIT:
        p.bad("limit", f"must be between 1 and {MAX_LIMIT} (0: {DEFAULT_LIMIT})")
        return DEFAULT_LIMIT
    return value


def _currency(p: RequestParser, value: str) -> str | None:
    if not value:
        return None
    if not _CURRENCY.fullmatch(value):
        p.bad("currency", "must be an ISO-4217 code such as EUR (or empty for every currency)")
    return value


def _month(p: RequestParser, value: str, field: str) -> date | None:
    m = _MONTH.fullmatch(value)
    if m is None or not 1 <= int(m.group(2)) <= 12 or int(m.group(1)) < 1:
        p.bad(field, "must be a month as YYYY-MM")
        return None
    return date(int(m.group(1)), int(m.group(2)), 1)
