"""The ``analytics`` schema's statements: loading what a batch needs, writing its changes,
and copies (a rebuild fills a schema of its own, then renames it into place).

Every write runs on the caller's connection, inside the transaction that also moves
the checkpoint; the sums are added as deltas (``x = x + EXCLUDED.x``).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from datetime import datetime

import asyncpg
import orjson

from common.roles import share_created
from projector.analytics.fold import Changes, CustomerTimes, Line, MonthKey, OrderFact

LIVE = "analytics"
COPY = "analytics__rebuild"
# In dependency-free order; every copy gets each of them LIKE the live one.
TABLES = (
    "orders", "order_lines", "customers", "customer_currencies", "products",
    "product_currencies", "product_customers", "customer_months", "months",
)  # fmt: skip
_COUNTING = "NOT o.deleted AND o.status <> 'CANCELLED'"


def _ids(values: Iterable[str]) -> list[str]:
    # asyncpg encodes uuid parameters from their text (in C): no uuid.UUID objects needed.
    return list(values)


class AnalyticsTables:
    """The statements over one schema (the live ``analytics`` or a rebuild's copy)."""

    def __init__(self, schema: str) -> None:
        if schema not in (LIVE, COPY):
            raise ValueError(f"unknown analytics schema {schema!r}")
        self.schema = schema

    # -- reads ---------------------------------------------------------------------------------

    async def orders(self, conn: asyncpg.Connection, ids: Collection[str]) -> dict[str, OrderFact]:
        if not ids:
            return {}
        s = self.schema
        rows = await conn.fetch(
            f"""
            SELECT o.order_id::text AS order_id, o.customer_id::text AS customer_id, o.currency,
                   o.total_cents, o.created_at, o.status, o.deleted, o.paid_cents,
                   (SELECT coalesce(json_agg(json_build_array(l.product_id, l.quantity,
                                                              l.line_total_cents)
                                             ORDER BY l.line_no), '[]')
                    FROM {s}.order_lines l WHERE l.order_id = o.order_id)::text AS lines
            FROM {s}.orders o WHERE o.order_id = ANY($1::uuid[])
            """,
            _ids(ids),
        )
        return {
            r["order_id"]: OrderFact(
                r["order_id"], r["customer_id"], r["currency"], r["total_cents"],
                r["created_at"], r["status"], r["deleted"],
                [Line(p, q, t) for p, q, t in orjson.loads(r["lines"])], r["paid_cents"],
            )
            for r in rows
        }  # fmt: skip

    async def customer_times(
        self, conn: asyncpg.Connection, customers: Collection[str]
    ) -> dict[str, CustomerTimes]:
        rows = await conn.fetch(
            f"SELECT customer_id::text AS id, first_order_at, last_order_at"
            f" FROM {self.schema}.customers WHERE customer_id = ANY($1::uuid[])",
            _ids(customers),
        )
        return {r["id"]: CustomerTimes(r["first_order_at"], r["last_order_at"]) for r in rows}

    async def customer_months(
        self, conn: asyncpg.Connection, customers: Collection[str]
    ) -> dict[str, dict[MonthKey, int]]:
        rows = await conn.fetch(
            f"SELECT customer_id::text AS id, month, currency, orders"
            f" FROM {self.schema}.customer_months"
            f" WHERE customer_id = ANY($1::uuid[]) AND orders > 0",
            _ids(customers),
        )
        result: dict[str, dict[MonthKey, int]] = {}
        for r in rows:
            result.setdefault(r["id"], {})[(r["month"], r["currency"])] = r["orders"]
        return result

    async def last_sold(
        self, conn: asyncpg.Connection, products: Collection[str]
    ) -> dict[str, datetime | None]:
        rows = await conn.fetch(
            f"SELECT product_id::text AS id, last_sold_at FROM {self.schema}.products"
            f" WHERE product_id = ANY($1::uuid[])",
            _ids(products),
        )
        return {r["id"]: r["last_sold_at"] for r in rows}

    async def recompute_customer_times(
        self, conn: asyncpg.Connection, customers: Collection[str]
    ) -> dict[str, CustomerTimes]:
        """First/last counting order of each customer from the (already written) facts."""
        rows = await conn.fetch(
            f"SELECT o.customer_id::text AS id, min(o.created_at) AS f, max(o.created_at) AS l"
            f" FROM {self.schema}.orders o"
            f" WHERE o.customer_id = ANY($1::uuid[]) AND {_COUNTING} GROUP BY 1",
            _ids(customers),
        )
        found = {r["id"]: CustomerTimes(r["f"], r["l"]) for r in rows}
        return {c: found.get(c, CustomerTimes(None, None)) for c in customers}

    async def recompute_last_sold(
        self, conn: asyncpg.Connection, products: Collection[str]
    ) -> dict[str, datetime | None]:
        s = self.schema
        rows = await conn.fetch(
            f"SELECT l.product_id::text AS id, max(o.created_at) AS at"
            f" FROM {s}.order_lines l JOIN {s}.orders o USING (order_id)"
            f" WHERE l.product_id = ANY($1::uuid[]) AND {_COUNTING} GROUP BY 1",
            _ids(products),
        )
        found = {r["id"]: r["at"] for r in rows}
        return {p: found.get(p) for p in products}

    # -- writes --------------------------------------------------------------------------------

    async def write_facts(self, conn: asyncpg.Connection, changes: Changes) -> None:
        """The orders' facts (and the lines of new ones): first, as recomputing reads them."""
        s = self.schema
        facts = list(changes.orders.values())
        if facts:
            await conn.execute(
                f"INSERT INTO {s}.orders AS t (order_id, customer_id, currency, total_cents,"
                " created_at, status, deleted, paid_cents) SELECT * FROM unnest($1::uuid[],"
                " $2::uuid[], $3::text[], $4::bigint[], $5::timestamptz[], $6::text[],"
                " $7::boolean[], $8::bigint[])"
                " ON CONFLICT (order_id) DO UPDATE SET status = EXCLUDED.status,"
                " deleted = EXCLUDED.deleted, paid_cents = EXCLUDED.paid_cents",
                _ids(f.order_id for f in facts),
                _ids(f.customer_id for f in facts),
                [f.currency for f in facts],
                [f.total_cents for f in facts],
                [f.created_at for f in facts],
                [f.status for f in facts],
                [f.deleted for f in facts],
                [f.paid_cents for f in facts],
            )
        lines = [
            (f.order_id, n, line)
            for f in facts
            if f.order_id in changes.new_orders
            for n, line in enumerate(f.lines, 1)
        ]
        if lines:
            await conn.execute(
                f"INSERT INTO {s}.order_lines (order_id, line_no, product_id, quantity,"
                " line_total_cents) SELECT * FROM unnest($1::uuid[], $2::integer[],"
                " $3::uuid[], $4::integer[], $5::bigint[])",
                _ids(o for o, _, _ in lines),
                [n for _, n, _ in lines],
                _ids(line.product_id for _, _, line in lines),
                [line.quantity for _, _, line in lines],
                [line.line_total_cents for _, _, line in lines],
            )

    async def write_entities(
        self,
        conn: asyncpg.Connection,
        changes: Changes,
        times: dict[str, CustomerTimes],
        last_sold: dict[str, datetime | None],
    ) -> None:
        """Customers and products: existence, sums, and first/last times (absolute)."""
        s = self.schema
        for table, key, created in (
            ("customers", "customer_id", changes.customers_created),
            ("products", "product_id", changes.products_created),
        ):
            if created:
                await conn.execute(
                    f"INSERT INTO {s}.{table} ({key}) SELECT unnest($1::uuid[])"
                    f" ON CONFLICT ({key}) DO NOTHING",
                    _ids(created),
                )
        customers: dict[str, list[int]] = {c: [*d, 0] for c, d in changes.customer_delta.items()}
        for (c, _), (payments, _) in changes.payment_delta.items():
            customers.setdefault(c, [0, 0, 0])[2] += payments
        await self._add(
            conn, "customers", ("customer_id",),
            ("total_orders", "cancelled_orders", "total_payments"),
            [((c,), d) for c, d in customers.items() if any(d)],
        )  # fmt: skip
        await self._add(
            conn, "products", ("product_id",), ("units_sold", "orders_count"),
            [((p,), d) for p, d in changes.product_delta.items() if any(d)],
        )  # fmt: skip
        if times:
            await conn.execute(
                f"UPDATE {s}.customers t SET first_order_at = u.f, last_order_at = u.l"
                " FROM unnest($1::uuid[], $2::timestamptz[], $3::timestamptz[]) AS u(id, f, l)"
                " WHERE t.customer_id = u.id",
                _ids(times),
                [t.first_order_at for t in times.values()],
                [t.last_order_at for t in times.values()],
            )
        if last_sold:
            await conn.execute(
                f"UPDATE {s}.products t SET last_sold_at = u.at"
                " FROM unnest($1::uuid[], $2::timestamptz[]) AS u(id, at)"
                " WHERE t.product_id = u.id",
                _ids(last_sold),
                list(last_sold.values()),
            )
        for table, key, deleted in (
            ("customers", "customer_id", changes.customers_deleted),
            ("products", "product_id", changes.products_deleted),
        ):
            if deleted:
                await conn.execute(
                    f"UPDATE {s}.{table} SET deleted = true WHERE {key} = ANY($1::uuid[])",
                    _ids(deleted),
                )

    async def write_sums(
        self, conn: asyncpg.Connection, changes: Changes, new_returning: dict[MonthKey, list[int]]
    ) -> None:
        """The per-currency, per-pair and per-month sums."""
        currencies = {k: [*d, 0, 0] for k, d in changes.customer_currency_delta.items()}
        for pair, (payments, paid) in changes.payment_delta.items():
            row = currencies.setdefault(pair, [0, 0, 0, 0])
            row[2] += payments
            row[3] += paid
        await self._add(
            conn, "customer_currencies", ("customer_id", "currency"),
            ("orders", "value_cents", "payments", "paid_cents"),
            [(k, d) for k, d in currencies.items() if any(d)],
        )  # fmt: skip
        await self._add(
            conn, "product_currencies", ("product_id", "currency"),
            ("units_sold", "orders_count", "revenue_cents"),
            [(k, d) for k, d in changes.product_currency_delta.items() if any(d)],
        )  # fmt: skip
        await self._add(
            conn, "product_customers", ("product_id", "customer_id"), ("units",),
            [(k, [d]) for k, d in changes.product_customer_delta.items() if d],
        )  # fmt: skip
        await self._add(
            conn, "customer_months", ("customer_id", "month", "currency"), ("orders",),
            [(k, [d]) for k, d in changes.customer_month_delta.items() if d],
        )  # fmt: skip
        months: dict[MonthKey, list[int]] = {}
        for key, (orders, revenue) in changes.month_delta.items():
            months[key] = [orders, revenue, 0, 0]
        for key, (new, returning) in new_returning.items():
            row = months.setdefault(key, [0, 0, 0, 0])
            row[2] += new
            row[3] += returning
        await self._add(
            conn, "months", ("month", "currency"),
            ("orders", "revenue_cents", "new_customers", "returning_customers"),
            [(k, d) for k, d in months.items() if any(d)],
        )  # fmt: skip

    async def _add(
        self,
        conn: asyncpg.Connection,
        table: str,
        keys: Sequence[str],
        sums: Sequence[str],
        rows: Sequence[tuple[tuple[object, ...], Sequence[int]]],
    ) -> None:
        """Add ``rows`` (key values, amounts) to ``table``'s ``sums`` (new keys start at 0)."""
        if not rows:
            return
        columns = [*keys, *sums]
        types = [_KEY_TYPES[k] for k in keys] + ["bigint"] * len(sums)
        arrays = [[row[0][i] for row in rows] for i in range(len(keys))] + [
            [row[1][i] for row in rows] for i in range(len(sums))
        ]
        params = ", ".join(f"${i}::{t}[]" for i, t in enumerate(types, 1))
        await conn.execute(
            f"INSERT INTO {self.schema}.{table} AS t ({', '.join(columns)})"
            f" SELECT * FROM unnest({params}) ON CONFLICT ({', '.join(keys)}) DO UPDATE SET "
            + ", ".join(f"{c} = t.{c} + EXCLUDED.{c}" for c in sums),
            *arrays,
        )

    # -- copies --------------------------------------------------------------------------------

    @staticmethod
    async def create_copy(conn: asyncpg.Connection) -> None:
        """An empty copy schema shaped like the live one (indexes included), readable by
        the reader once renamed into place, whoever runs the projector."""
        await conn.execute(f"DROP SCHEMA IF EXISTS {COPY} CASCADE")
        await conn.execute(f"CREATE SCHEMA {COPY}")
        for table in TABLES:
            await conn.execute(f"CREATE TABLE {COPY}.{table} (LIKE {LIVE}.{table} INCLUDING ALL)")
        await share_created(conn, schema=COPY, tables=[f"{COPY}.{t}" for t in TABLES], home=LIVE)

    @staticmethod
    async def drop_copy(conn: asyncpg.Connection) -> None:
        await conn.execute(f"DROP SCHEMA IF EXISTS {COPY} CASCADE")

    @staticmethod
    async def swap_in_copy(conn: asyncpg.Connection) -> None:
        """Replace the live schema by the copy (in the caller's transaction). Readers blocked
        on the live tables resolve the names again once it commits."""
        await conn.execute(f"DROP SCHEMA {LIVE} CASCADE")
        await conn.execute(f"ALTER SCHEMA {COPY} RENAME TO {LIVE}")

    async def analyze(self, conn: asyncpg.Connection) -> None:
        for table in TABLES:
            await conn.execute(f"ANALYZE {self.schema}.{table}")


_KEY_TYPES = {
    "customer_id": "uuid", "product_id": "uuid", "currency": "text", "month": "date",
}  # fmt: skip
