"""The entity registry against the write side: every event type the write side can
record is folded by, or declared ignored by, every projection that reads its aggregate,
so a new event type no projection knows fails here, not in production (where it stops
the projection as poison)."""

from __future__ import annotations

import inspect
from datetime import UTC, datetime

import pytest

from common import events as ev
from common.entities import ENTITIES, ORDERS, Entity
from common.events import StoredEvent
from common.pb.shop.v1 import query_service_pb2
from common.reducers import ReducerError
from projector.batch import reduce_batch
from projector.stores.memory_store import MemoryProjectionStore
from write_server.domain import events as domain

# Aggregates no read model shows: their events have other consumers (the webhook fan-out).
NOT_READ_MODELS = {ev.WEBHOOK_SUBSCRIPTION}


def recordable() -> dict[str, str]:
    """Every event type the write side can record -> its aggregate type (the leaf
    classes of ``write_server.domain.events``)."""
    found: dict[str, str] = {}
    for _, cls in inspect.getmembers(domain, inspect.isclass):
        if issubclass(cls, domain.DomainEvent) and not cls.__subclasses__():
            found[cls.__name__] = cls.aggregate_type
    return found


def test_the_write_side_records_what_the_contract_lists() -> None:
    assert set(recordable()) == set(ev.SCHEMA_VERSIONS)


@pytest.mark.parametrize("entity", ENTITIES, ids=lambda e: e.name)
def test_every_event_of_what_an_entity_reads_is_folded_or_declared_ignored(
    entity: Entity,
) -> None:
    unknown = sorted(
        event_type
        for event_type, aggregate in recordable().items()
        if aggregate in entity.consumes and not entity.knows(event_type)
    )
    assert unknown == [], f"{entity.name} knows nothing of {unknown}"
    # Its own aggregate's events are all folded: the document's version counts every one.
    own = {t for t, a in recordable().items() if a == entity.aggregate_type}
    assert own <= entity.folds, sorted(own - entity.folds)
    assert not entity.ignores & own


def test_every_aggregate_is_read_by_an_entity_or_known_to_be_elsewhere() -> None:
    read = {a for e in ENTITIES for a in e.consumes}
    assert set(recordable().values()) - read == NOT_READ_MODELS


@pytest.mark.parametrize("entity", ENTITIES, ids=lambda e: e.name)
def test_lists_and_embeds_are_served_by_indexes(entity: Entity) -> None:
    for index in entity.indexes:
        assert set(index.fields) <= set(entity.filters), index
    for embed in entity.embeds:
        # The projector finds the documents showing an aggregate through this index.
        assert entity.index_for({embed.by: "x"}) == f"{_index_of(entity, embed.by)}:x"
    assert {f for i in entity.indexes for f in i.fields} == set(entity.filters)


def _index_of(entity: Entity, field: str) -> str:
    return next(i.name for i in entity.indexes if i.fields == (field,))


async def test_an_event_type_no_entity_knows_stops_the_projection() -> None:
    store = MemoryProjectionStore(ORDERS)
    strange = StoredEvent(
        seq=1,
        xid=1,
        aggregate_type=ev.ORDER,
        aggregate_id="00000000-0000-0000-0000-000000000001",
        aggregate_version=1,
        event_type="OrderTeleported",
        payload={},
        occurred_at=datetime(2026, 1, 1, tzinfo=UTC),
    )
    with pytest.raises(ReducerError, match="orders does not know this event type"):
        await reduce_batch(ORDERS, store, [strange])


@pytest.mark.parametrize("entity", ENTITIES, ids=lambda e: e.name)
def test_the_query_service_has_the_rpcs_the_registry_serves(entity: Entity) -> None:
    """What the servicer's Get/List (made from the registry) and the wire assembly of list
    responses (``read_server.wire``) take for granted of the proto."""
    service = query_service_pb2.DESCRIPTOR.services_by_name["QueryService"]
    get, listing = (service.methods_by_name[m] for m in (entity.get_rpc, entity.list_rpc))
    assert get.output_type.full_name == entity.document.DESCRIPTOR.full_name
    for name in ("id", "source", "consistency_token"):
        assert name in get.input_type.fields_by_name, (entity.get_rpc, name)
    request = listing.input_type.fields_by_name
    for name in ("page_size", "page_token", "source", "consistency_token", *entity.filters):
        assert name in request, (entity.list_rpc, name)
    items, token = (listing.output_type.fields_by_number[n] for n in (1, 2))
    assert items.message_type.full_name == entity.document.DESCRIPTOR.full_name
    assert items.is_repeated and token.name == "next_page_token"
