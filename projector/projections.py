"""The three projection kinds and the six projections (kind x backend) built from them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from common.cursors import SortKey
from common.documents import status_name
from common.events import (
    CUSTOMER,
    CUSTOMER_FIELDS,
    ORDER,
    ORDER_FIELDS,
    PRODUCT,
    PRODUCT_FIELDS,
)
from common.pb.shop.v1 import shop_pb2
from common.redis_keys import ALL, category_index, order_index

REDIS = "redis"
PG = "pg"
BACKENDS = (REDIS, PG)


@dataclass(frozen=True, slots=True)
class ProjectionKind:
    """What one kind of projection holds and which events feed it."""

    name: str  # products | customers | orders
    aggregate_type: str  # the aggregate whose events create/update/delete the documents
    consumes: tuple[str, ...]  # aggregate types read from the event log
    document: type[Message]
    table: str  # the PostgreSQL read-model table (schema ``read``)
    index_keys: Callable[[Message], list[str]]  # Redis index suffixes a document belongs to
    fields: tuple[str, ...]  # the entity's own fields (common.events), besides id/version/times


def created_us(ts: Timestamp) -> int:
    """Microseconds since the epoch of a protobuf timestamp (the sort key's first part)."""
    return int(ts.seconds) * 1_000_000 + int(ts.nanos) // 1000


def member(doc: Message) -> str:
    """The lexicographic index member of a document (``SortKey.member()``)."""
    assert isinstance(doc, shop_pb2.Product | shop_pb2.Customer | shop_pb2.Order)
    return SortKey(created_us(doc.created_at), doc.id).member()


def _product_indexes(doc: Message) -> list[str]:
    assert isinstance(doc, shop_pb2.Product)
    # An empty category is "no category": nothing lists by it, so it gets no index.
    return [ALL, category_index(doc.category)] if doc.category else [ALL]


def _customer_indexes(doc: Message) -> list[str]:
    assert isinstance(doc, shop_pb2.Customer)
    return [ALL]


def _order_indexes(doc: Message) -> list[str]:
    assert isinstance(doc, shop_pb2.Order)
    status = status_name(doc.status)
    return [
        ALL,
        order_index(doc.customer_id, None),
        order_index(None, status),
        order_index(doc.customer_id, status),
    ]


PRODUCTS = ProjectionKind(
    "products",
    PRODUCT,
    (PRODUCT,),
    shop_pb2.Product,
    "product_read_model",
    _product_indexes,
    PRODUCT_FIELDS,
)
CUSTOMERS = ProjectionKind(
    "customers",
    CUSTOMER,
    (CUSTOMER,),
    shop_pb2.Customer,
    "customer_read_model",
    _customer_indexes,
    CUSTOMER_FIELDS,
)
# Orders also read Customer events: the write model JOINs the live customer name/email.
ORDERS = ProjectionKind(
    "orders",
    ORDER,
    (ORDER, CUSTOMER),
    shop_pb2.Order,
    "order_read_model",
    _order_indexes,
    ORDER_FIELDS,
)

KINDS: dict[str, ProjectionKind] = {k.name: k for k in (PRODUCTS, CUSTOMERS, ORDERS)}


def projection_name(backend: str, kind: ProjectionKind) -> str:
    """``redis:products`` etc."""
    return f"{backend}:{kind.name}"


ALL_PROJECTIONS: tuple[str, ...] = tuple(
    projection_name(b, k) for b in BACKENDS for k in (PRODUCTS, CUSTOMERS, ORDERS)
)


def parse_projection(name: str) -> tuple[str, ProjectionKind]:
    """``"redis:orders"`` -> (``"redis"``, ORDERS); ValueError if unknown."""
    backend, _, kind = name.partition(":")
    if backend not in BACKENDS or kind not in KINDS:
        raise ValueError(f"unknown projection {name!r}; expected one of {ALL_PROJECTIONS}")
    return backend, KINDS[kind]
