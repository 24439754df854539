"""Every entity the read side serves, each declared once (one module each).

The registry is the one place entity names are listed: the projector's projections and
stores, verify and the rebuild, the read sources, the query servicer's get and list
RPCs and the CLI's ``--only`` choices are all derived from :data:`ENTITIES`. Adding one:
docs/ARCHITECTURE.md, "Adding a read model".
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from google.protobuf.message import Message

from common.entities._model import ALL, Column, Embed, Entity, FilterKind, Index, WriteModel
from common.entities.customer import CUSTOMERS
from common.entities.order import ORDERS
from common.entities.product import PRODUCTS
from common.events import StoredEvent
from common.reducers import ReducerError

ENTITIES: tuple[Entity, ...] = (PRODUCTS, CUSTOMERS, ORDERS)
BY_NAME: Mapping[str, Entity] = MappingProxyType({e.name: e for e in ENTITIES})
_BY_AGGREGATE: Mapping[str, Entity] = MappingProxyType({e.aggregate_type: e for e in ENTITIES})


def entity(name: str) -> Entity:
    """The entity called ``name`` (``products`` ...); ValueError if there is none."""
    found = BY_NAME.get(name)
    if found is None:
        raise ValueError(f"unknown entity {name!r}; expected one of {', '.join(BY_NAME)}")
    return found


def reduce_document(doc: Message | None, event: StoredEvent) -> Message | None:
    """``event`` applied by the reducer of the entity its aggregate is."""
    owner = _BY_AGGREGATE.get(event.aggregate_type)
    if owner is None:
        raise ReducerError(event, f"unknown aggregate type {event.aggregate_type!r}")
    return owner.reduce(doc, event)


__all__ = [
    "ALL",
    "BY_NAME",
    "CUSTOMERS",
    "ENTITIES",
    "ORDERS",
    "PRODUCTS",
    "Column",
    "Embed",
    "Entity",
    "FilterKind",
    "Index",
    "WriteModel",
    "entity",
    "reduce_document",
]
