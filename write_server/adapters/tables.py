"""SQLAlchemy Core table definitions of the write model (the schema itself is in the migrations)."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Integer,
    MetaData,
    SmallInteger,
    Table,
    Text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID

metadata = MetaData()


def _ts(name: str, nullable: bool = False) -> Column[object]:
    return Column(name, DateTime(timezone=True), nullable=nullable)


products = Table(
    "products",
    metadata,
    Column("id", UUID(as_uuid=False), primary_key=True),
    Column("name", Text, nullable=False),
    Column("description", Text, nullable=False),
    Column("price_cents", BigInteger, nullable=False),
    Column("currency", Text, nullable=False),
    Column("category", Text, nullable=False),
    Column("stock", Integer, nullable=False),
    Column("version", BigInteger, nullable=False),
    _ts("created_at"),
    _ts("updated_at"),
    _ts("deleted_at", nullable=True),
)

customers = Table(
    "customers",
    metadata,
    Column("id", UUID(as_uuid=False), primary_key=True),
    Column("name", Text, nullable=False),
    Column("email", Text, nullable=False),
    Column("address", Text, nullable=False),
    Column("city", Text, nullable=False),
    Column("postal_code", Text, nullable=False),
    Column("country", Text, nullable=False),
    Column("version", BigInteger, nullable=False),
    _ts("created_at"),
    _ts("updated_at"),
    _ts("deleted_at", nullable=True),
)

orders = Table(
    "orders",
    metadata,
    Column("id", UUID(as_uuid=False), primary_key=True),
    Column("order_number", Text, nullable=False),
    Column("customer_id", UUID(as_uuid=False), nullable=False),
    Column("total_cents", BigInteger, nullable=False),
    Column("currency", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("version", BigInteger, nullable=False),
    _ts("created_at"),
    _ts("updated_at"),
    _ts("deleted_at", nullable=True),
)

order_items = Table(
    "order_items",
    metadata,
    Column("order_id", UUID(as_uuid=False), primary_key=True),
    Column("line_no", Integer, primary_key=True),
    Column("product_id", UUID(as_uuid=False), nullable=False),
    Column("name", Text, nullable=False),
    Column("quantity", Integer, nullable=False),
    Column("unit_price_cents", BigInteger, nullable=False),
    Column("line_total_cents", BigInteger, nullable=False),
)

events = Table(
    "events",
    metadata,
    Column("seq", BigInteger, primary_key=True),
    Column("aggregate_type", Text, nullable=False),
    Column("aggregate_id", UUID(as_uuid=False), nullable=False),
    Column("aggregate_version", BigInteger, nullable=False),
    Column("event_type", Text, nullable=False),
    Column("schema_version", SmallInteger, nullable=False, server_default="1"),
    Column("payload", JSONB, nullable=False),
    Column("metadata", JSONB, nullable=False),
    _ts("occurred_at"),
)

command_requests = Table(
    "command_requests",
    metadata,
    Column("request_id", Text, primary_key=True),
    Column("command", Text, nullable=False),
    Column("payload_hash", Text, nullable=False),
    Column("reply", JSONB, nullable=False),
)
