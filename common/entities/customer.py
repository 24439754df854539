"""Customers."""

from __future__ import annotations

from google.protobuf.message import Message

from common import events as ev
from common.documents import customer_from_row, document_columns
from common.entities._columns import columns
from common.entities._model import Entity, WriteModel
from common.events import CUSTOMER_FIELDS, StoredEvent
from common.pb.shop.v1 import shop_pb2
from common.reducers import ReducerError, fold, own_fields


def _change(doc: shop_pb2.Customer, event: StoredEvent) -> None:
    if not own_fields(
        doc, event, CUSTOMER_FIELDS, created=ev.CUSTOMER_CREATED, updated=ev.CUSTOMER_UPDATED
    ):
        raise ReducerError(event, "not a Customer event")


def reduce_customer(doc: Message | None, event: StoredEvent) -> shop_pb2.Customer | None:
    """Apply a Customer event to a customer document."""
    return fold(
        shop_pb2.Customer,
        doc,
        event,
        created=ev.CUSTOMER_CREATED,
        deleted=ev.CUSTOMER_DELETED,
        change=_change,
    )


CUSTOMERS = Entity(
    name="customers",
    label="customer",
    aggregate_type=ev.CUSTOMER,
    document=shop_pb2.Customer,
    fields=CUSTOMER_FIELDS,
    reduce=reduce_customer,
    folds=frozenset({ev.CUSTOMER_CREATED, ev.CUSTOMER_UPDATED, ev.CUSTOMER_DELETED}),
    table="customer_read_model",
    columns=columns(shop_pb2.Customer, CUSTOMER_FIELDS),
    from_row=customer_from_row,
    write_model=WriteModel(
        f"SELECT {document_columns(CUSTOMER_FIELDS)} FROM customers", "deleted_at IS NULL"
    ),
)
