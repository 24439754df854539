"""The SQL of the PostgreSQL unit of work, written once and prepared once per connection.

A command's writes are *one* statement: one data-modifying CTE per table and
operation it needs (rows passed as arrays and ``unnest``-ed), the event rows, and
the NOTIFY, so a command costs one round trip for all of its writes, whatever the
number of rows. The statement text depends only on which CTEs a command needs (its
*shape*), so there are a handful of texts, each prepared once per connection
(asyncpg's statement cache).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from common.events import CUSTOMER_FIELDS, ORDER_ITEM_FIELDS, PRODUCT_FIELDS


@dataclass(frozen=True, slots=True)
class Columns:
    """A table and the typed columns one of its CTEs writes."""

    table: str
    columns: tuple[tuple[str, str], ...]  # (name, PostgreSQL type)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.columns)


_TAIL = (("version", "bigint"), ("updated_at", "timestamptz"), ("deleted_at", "timestamptz"))
_PRODUCT_TYPES = dict(
    name="text", description="text", price_cents="bigint", currency="text", category="text",
    stock="integer",
)  # fmt: skip
_CUSTOMER_TYPES = dict.fromkeys(CUSTOMER_FIELDS, "text")
_ITEM_TYPES = dict(
    product_id="uuid", name="text", quantity="integer", unit_price_cents="bigint",
    line_total_cents="bigint",
)  # fmt: skip


def _typed(fields: tuple[str, ...], types: dict[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple((name, types[name]) for name in fields)


PRODUCT_STATE = _typed(PRODUCT_FIELDS, _PRODUCT_TYPES) + _TAIL
CUSTOMER_STATE = _typed(CUSTOMER_FIELDS, _CUSTOMER_TYPES) + _TAIL
ORDER_STATE = (
    ("status", "text"),
    ("payment_status", "text"),
    ("payment_charge_id", "text"),
    *_TAIL,
)
# event_types is a JSON array: arrays of arrays cannot travel through unnest.
WEBHOOK_STATE = (
    ("url", "text"), ("event_types", "jsonb"), ("description", "text"), ("secret", "text"),
    ("previous_secret", "text"), ("rotated_at", "timestamptz"), ("status", "text"), *_TAIL,
)  # fmt: skip
_NEW = (("id", "uuid"), ("created_at", "timestamptz"))
_GUARD = (("id", "uuid"), ("loaded_version", "bigint"))
# What an order is created with and never changes.
_ORDER_ONCE = (
    ("order_number", "text"), ("customer_id", "uuid"), ("total_cents", "bigint"),
    ("currency", "text"),
)  # fmt: skip

# Every CTE a command may need, in the order they appear in a statement.
INSERTS = {
    "products": Columns("products", _NEW + PRODUCT_STATE),
    "customers": Columns("customers", _NEW + CUSTOMER_STATE),
    "orders": Columns("orders", (*_NEW, *_ORDER_ONCE, *ORDER_STATE)),
    "webhook_subscriptions": Columns("webhook_subscriptions", _NEW + WEBHOOK_STATE),
    "order_items": Columns(
        "order_items",
        (("order_id", "uuid"), ("line_no", "integer"), *_typed(ORDER_ITEM_FIELDS, _ITEM_TYPES)),
    ),
}
UPDATES = {
    "products": Columns("products", _GUARD + PRODUCT_STATE),
    "customers": Columns("customers", _GUARD + CUSTOMER_STATE),
    "orders": Columns("orders", _GUARD + ORDER_STATE),
    "webhook_subscriptions": Columns("webhook_subscriptions", _GUARD + WEBHOOK_STATE),
}
EVENTS = Columns(
    "events",
    (
        ("aggregate_type", "text"), ("aggregate_id", "uuid"), ("aggregate_version", "bigint"),
        ("event_type", "text"), ("schema_version", "smallint"), ("payload", "jsonb"),
        ("metadata", "jsonb"), ("occurred_at", "timestamptz"),
    ),
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Shape:
    """Which tables a command inserts into and updates (events are always written)."""

    inserts: tuple[str, ...]
    updates: tuple[str, ...]


@cache
def write_statement(shape: Shape) -> str:
    """The one statement that writes a command of ``shape``.

    Parameters: for each insert, then each update, then the events, one array per
    column (in :data:`INSERTS`/:data:`UPDATES`/:data:`EVENTS` order); last, the NOTIFY
    channel. It returns the events' last ``seq``, their ``xid`` and, per update, how
    many rows passed the version guard (``updated_<table>``).
    """
    ctes: list[str] = []
    params = 0

    def arrays(columns: Columns) -> str:
        nonlocal params
        first = params + 1
        params += len(columns.columns)
        return ", ".join(f"${first + i}::{t}[]" for i, (_, t) in enumerate(columns.columns))

    for table in shape.inserts:
        cols = INSERTS[table]
        ctes.append(
            f"insert_{table} AS (INSERT INTO {cols.table} ({', '.join(cols.names)})"
            f" SELECT * FROM unnest({arrays(cols)}))"
        )
    for table in shape.updates:
        cols = UPDATES[table]
        assignments = ", ".join(f"{n} = u.{n}" for n in cols.names[2:])
        ctes.append(
            f"updated_{table} AS (UPDATE {cols.table} AS t SET {assignments}"
            f" FROM unnest({arrays(cols)}) AS u({', '.join(cols.names)})"
            " WHERE t.id = u.id AND t.version = u.loaded_version RETURNING 1)"
        )
    ctes.append(
        f"appended AS (INSERT INTO events ({', '.join(EVENTS.names)})"
        f" SELECT * FROM unnest({arrays(EVENTS)}) RETURNING seq, xid)"
    )
    counts = "".join(
        f", (SELECT count(*) FROM updated_{table}) AS updated_{table}" for table in shape.updates
    )
    # NOTIFY last: it takes a global lock at commit, held until the commit ends.
    return (
        "WITH " + ",\n".join(ctes) + "\nSELECT (SELECT max(seq) FROM appended) AS seq,"
        " (SELECT xid::text::bigint FROM appended LIMIT 1) AS xid" + counts + ","
        f" pg_notify(${params + 1}, '') AS notified"
    )


def _select(table: str, state: tuple[tuple[str, str], ...], extra: str = "") -> str:
    names = ", ".join(name for name, _ in state)
    return (
        f"SELECT id::text AS id, {names}, created_at{extra} FROM {table} WHERE id = ANY($1::uuid[])"
    )


LOAD_PRODUCTS = _select("products", PRODUCT_STATE)
LOAD_CUSTOMERS = _select("customers", CUSTOMER_STATE)
# An order with its lines in one round trip (an array of records, in line order).
LOAD_ORDERS = _select(
    "orders AS o",
    ORDER_STATE,
    ", order_number, customer_id::text AS customer_id, currency, ARRAY("
    "SELECT ROW(product_id::text, name, quantity, unit_price_cents) FROM order_items i"
    " WHERE i.order_id = o.id ORDER BY line_no) AS lines",
)
LOAD_WEBHOOKS = _select("webhook_subscriptions", WEBHOOK_STATE)
ORDER_NUMBERS = "SELECT nextval('order_number_seq') FROM generate_series(1, $1)"
GET_REQUEST = (
    "SELECT command, payload_hash, reply FROM command_requests"
    " WHERE subject = $1 AND request_id = $2"
)
ADD_REQUEST = (
    "INSERT INTO command_requests (subject, request_id, command, payload_hash, reply)"
    " VALUES ($1, $2, $3, $4, $5::jsonb)"
)
LOCK = "SELECT count(pg_advisory_xact_lock(k)) FROM unnest($1::bigint[]) AS k"


def begin_and_lock(keys: list[int]) -> str:
    """``BEGIN`` and the advisory locks in one simple-protocol message (one round trip).

    The keys are integers we computed (never client text), so writing them into
    the SQL is safe. Sorted keys: unnest yields them in array order, so every
    transaction takes its locks in the same global order (no deadlocks).
    """
    literal = "{" + ",".join(str(int(k)) for k in keys) + "}"
    return f"BEGIN; SELECT count(pg_advisory_xact_lock(k)) FROM unnest('{literal}'::bigint[]) k"
