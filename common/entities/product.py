"""Products: the catalogue, listed by category."""

from __future__ import annotations

from google.protobuf.message import Message

from common import events as ev
from common.documents import document_columns, product_from_row
from common.entities._columns import columns
from common.entities._model import Entity, Index, WriteModel
from common.events import PRODUCT_FIELDS, StoredEvent
from common.pb.shop.v1 import shop_pb2
from common.reducers import ReducerError, fold, own_fields


def _change(doc: shop_pb2.Product, event: StoredEvent) -> None:
    if own_fields(
        doc, event, PRODUCT_FIELDS, created=ev.PRODUCT_CREATED, updated=ev.PRODUCT_UPDATED
    ):
        return
    if event.event_type in (ev.PRODUCT_STOCK_RESERVED, ev.PRODUCT_STOCK_RELEASED):
        doc.stock = event.payload["stock"]
    else:
        raise ReducerError(event, "not a Product event")


def reduce_product(doc: Message | None, event: StoredEvent) -> shop_pb2.Product | None:
    """Apply a Product event to a product document."""
    return fold(
        shop_pb2.Product,
        doc,
        event,
        created=ev.PRODUCT_CREATED,
        deleted=ev.PRODUCT_DELETED,
        change=_change,
    )


PRODUCTS = Entity(
    name="products",
    label="product",
    aggregate_type=ev.PRODUCT,
    document=shop_pb2.Product,
    fields=PRODUCT_FIELDS,
    reduce=reduce_product,
    folds=frozenset(
        {
            ev.PRODUCT_CREATED,
            ev.PRODUCT_UPDATED,
            ev.PRODUCT_STOCK_RESERVED,
            ev.PRODUCT_STOCK_RELEASED,
            ev.PRODUCT_DELETED,
        }
    ),
    table="product_read_model",
    columns=columns(shop_pb2.Product, PRODUCT_FIELDS),
    from_row=product_from_row,
    write_model=WriteModel(
        f"SELECT {document_columns(PRODUCT_FIELDS)} FROM products", "deleted_at IS NULL"
    ),
    indexes=(Index("category", ("category",)),),
    filters={"category": "text"},
)
