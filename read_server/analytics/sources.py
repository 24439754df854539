"""The two analytics sources: the projector's materialized tables (SOURCE_READ_MODEL) and
live aggregates over the write tables (SOURCE_WRITE_MODEL, :mod:`common.analytics_queries`).

Both answer with the same messages, built by the same functions below, and read every
figure of one reply and its freshness in one read-only REPEATABLE READ transaction, so
the freshness is exactly the state the figures come from.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import date, datetime
from typing import Any, Protocol

import asyncpg

from common import analytics_materialized as mat
from common import analytics_queries as live
from common.documents import timestamp
from common.pb.shop.v1 import analytics_pb2 as an
from common.positions import Position, encode_token

Row = Any  # asyncpg.Record


class AnalyticsSource(Protocol):
    """One place the analytics figures come from; every method reads one consistent
    snapshot of it through ``conn`` and returns ``None`` for a missing entity."""

    async def freshness(self, conn: asyncpg.Connection) -> an.AnalyticsFreshness: ...

    async def customer_stats(
        self, conn: asyncpg.Connection, customer_id: str
    ) -> an.CustomerStats | None: ...

    async def product_sales(
        self, conn: asyncpg.Connection, product_id: str
    ) -> an.ProductSalesStats | None: ...

    async def top_products(
        self, conn: asyncpg.Connection, by_units: bool, limit: int, currency: str | None
    ) -> list[an.TopProduct]: ...

    async def top_customers(
        self, conn: asyncpg.Connection, limit: int, currency: str | None
    ) -> list[an.TopCustomer]: ...

    async def months(
        self, conn: asyncpg.Connection, first: date, last: date, currency: str | None
    ) -> list[an.MonthlyRevenue]: ...


class MaterializedAnalytics:
    """SOURCE_READ_MODEL: the ``analytics`` schema the projector keeps."""

    async def freshness(self, conn: asyncpg.Connection) -> an.AnalyticsFreshness:
        row = await conn.fetchrow(mat.FRESHNESS, mat.PROJECTION)
        if row is None:  # checked as built just before; a rebuild cannot remove the row
            return an.AnalyticsFreshness()
        return _freshness(Position(row["xid"], row["seq"]), row["last_seq"], row["occurred_at"])

    async def customer_stats(
        self, conn: asyncpg.Connection, customer_id: str
    ) -> an.CustomerStats | None:
        key = uuid.UUID(customer_id)
        row = await conn.fetchrow(mat.CUSTOMER, key)
        if row is None or row["deleted"]:
            return None
        return _customer_stats(customer_id, row, await conn.fetch(mat.CUSTOMER_CURRENCIES, key))

    async def product_sales(
        self, conn: asyncpg.Connection, product_id: str
    ) -> an.ProductSalesStats | None:
        key = uuid.UUID(product_id)
        row = await conn.fetchrow(mat.PRODUCT, key)
        if row is None or row["deleted"]:
            return None
        currencies = await conn.fetch(mat.PRODUCT_CURRENCIES, key)
        top = await conn.fetchval(mat.PRODUCT_TOP_CUSTOMER, key)
        stats = _product_sales(product_id, currencies, top)
        stats.units_sold, stats.orders_count = row["units_sold"], row["orders_count"]
        if row["last_sold_at"] is not None:
            stats.last_sold_at.CopyFrom(timestamp(row["last_sold_at"]))
        return stats

    async def top_products(
        self, conn: asyncpg.Connection, by_units: bool, limit: int, currency: str | None
    ) -> list[an.TopProduct]:
        sql = mat.TOP_PRODUCTS_BY_UNITS if by_units else mat.TOP_PRODUCTS_BY_REVENUE
        return [_top_product(r) for r in await conn.fetch(sql, limit, currency)]

    async def top_customers(
        self, conn: asyncpg.Connection, limit: int, currency: str | None
    ) -> list[an.TopCustomer]:
        return [_top_customer(r) for r in await conn.fetch(mat.TOP_CUSTOMERS, limit, currency)]

    async def months(
        self, conn: asyncpg.Connection, first: date, last: date, currency: str | None
    ) -> list[an.MonthlyRevenue]:
        return [_month(r) for r in await conn.fetch(mat.MONTHS, first, last, currency)]


class LiveAnalytics:
    """SOURCE_WRITE_MODEL: JOINs and aggregates over the write tables, per request."""

    async def freshness(self, conn: asyncpg.Connection) -> an.AnalyticsFreshness:
        row = await conn.fetchrow(live.SNAPSHOT)
        assert row is not None
        return _freshness(Position(row["xid"], 0), row["seq"], row["current_to"])

    async def customer_stats(
        self, conn: asyncpg.Connection, customer_id: str
    ) -> an.CustomerStats | None:
        key = uuid.UUID(customer_id)
        if await conn.fetchval(live.CUSTOMER_EXISTS, key) is None:
            return None
        totals = await conn.fetchrow(live.CUSTOMER_TOTALS, key)
        return _customer_stats(customer_id, totals, await conn.fetch(live.CUSTOMER_CURRENCIES, key))

    async def product_sales(
        self, conn: asyncpg.Connection, product_id: str
    ) -> an.ProductSalesStats | None:
        key = uuid.UUID(product_id)
        if await conn.fetchval(live.PRODUCT_EXISTS, key) is None:
            return None
        currencies = await conn.fetch(live.PRODUCT_CURRENCIES, key)
        top = await conn.fetchval(live.PRODUCT_TOP_CUSTOMER, key)
        stats = _product_sales(product_id, currencies, top)
        stats.units_sold = sum(r["units_sold"] for r in currencies)
        stats.orders_count = sum(r["orders_count"] for r in currencies)
        if currencies:
            stats.last_sold_at.CopyFrom(timestamp(max(r["last_sold_at"] for r in currencies)))
        return stats

    async def top_products(
        self, conn: asyncpg.Connection, by_units: bool, limit: int, currency: str | None
    ) -> list[an.TopProduct]:
        sql = live.TOP_PRODUCTS.format(order="units_sold" if by_units else "revenue_cents")
        return [_top_product(r) for r in await conn.fetch(sql, limit, currency)]

    async def top_customers(
        self, conn: asyncpg.Connection, limit: int, currency: str | None
    ) -> list[an.TopCustomer]:
        return [_top_customer(r) for r in await conn.fetch(live.TOP_CUSTOMERS, limit, currency)]

    async def months(
        self, conn: asyncpg.Connection, first: date, last: date, currency: str | None
    ) -> list[an.MonthlyRevenue]:
        return [_month(r) for r in await conn.fetch(live.MONTHS, first, last, currency)]


# -- rows to messages (shared, so both sources answer alike) -------------------------------------


def _avg(total: int, count: int) -> int:
    return total // count if count else 0


def _freshness(
    position: Position, last_seq: int | None, current_to: datetime | None
) -> an.AnalyticsFreshness:
    fresh = an.AnalyticsFreshness(sequence=last_seq or 0, consistency_token=encode_token(position))
    if current_to is not None:
        fresh.current_to.CopyFrom(timestamp(current_to))
    return fresh


def _customer_stats(customer_id: str, totals: Row, currencies: Sequence[Row]) -> an.CustomerStats:
    stats = an.CustomerStats(
        customer_id=customer_id,
        total_orders=totals["total_orders"],
        cancelled_orders=totals["cancelled_orders"],
        total_payments=totals["total_payments"],
        by_currency=[
            an.CustomerCurrencyStats(
                currency=r["currency"],
                orders=r["orders"],
                lifetime_value_cents=r["value_cents"],
                avg_order_value_cents=_avg(r["value_cents"], r["orders"]),
                payments=r["payments"],
                paid_value_cents=r["paid_cents"],
            )
            for r in currencies
        ],
    )
    if totals["first_order_at"] is not None:
        stats.first_order_at.CopyFrom(timestamp(totals["first_order_at"]))
        stats.last_order_at.CopyFrom(timestamp(totals["last_order_at"]))
    return stats


def _product_sales(
    product_id: str, currencies: Sequence[Row], top_customer: Any
) -> an.ProductSalesStats:
    return an.ProductSalesStats(
        product_id=product_id,
        top_customer_id="" if top_customer is None else str(top_customer),
        by_currency=[
            an.ProductCurrencySales(
                currency=r["currency"],
                units_sold=r["units_sold"],
                orders_count=r["orders_count"],
                revenue_cents=r["revenue_cents"],
            )
            for r in currencies
        ],
    )


def _top_product(r: Row) -> an.TopProduct:
    return an.TopProduct(
        product_id=r["product_id"],
        currency=r["currency"],
        units_sold=r["units_sold"],
        revenue_cents=r["revenue_cents"],
        orders_count=r["orders_count"],
    )


def _top_customer(r: Row) -> an.TopCustomer:
    return an.TopCustomer(
        customer_id=r["customer_id"],
        currency=r["currency"],
        orders=r["orders"],
        lifetime_value_cents=r["value_cents"],
        avg_order_value_cents=_avg(r["value_cents"], r["orders"]),
    )


def _month(r: Row) -> an.MonthlyRevenue:
    return an.MonthlyRevenue(
        month=r["month"].strftime("%Y-%m"),
        currency=r["currency"],
        orders=r["orders"],
        revenue_cents=r["revenue_cents"],
        avg_order_value_cents=_avg(r["revenue_cents"], r["orders"]),
        new_customers=r["new_customers"],
        returning_customers=r["returning_customers"],
    )
