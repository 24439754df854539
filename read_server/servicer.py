"""shop.v1.QueryService: validate, pick the source, return wire bytes.

One ``async def`` per RPC, named like it: the ``Get<Entity>`` and ``List<Entities>`` of
every entity of :mod:`common.entities` are made from the registry (:func:`_get_rpc`,
:func:`_list_rpc`), the other families come from their mixins. Every method returns the
serialized response (a stored document for gets, a concatenation for lists, see
:mod:`read_server.wire`), which the server passes through unchanged.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import Message

from common.cursors import SortKey, encode_page_token
from common.entities import ENTITIES, Entity
from common.errors import NotFound
from read_server.analytics.rpcs import AnalyticsRpcs
from read_server.deadlines import wait_budget
from read_server.history.rpcs import HistoryRpcs
from read_server.parked import ParkedDocuments
from read_server.reads import Reads
from read_server.requests import RequestParser
from read_server.search.rpcs import SearchRpcs
from read_server.sources.base import Page, SourceSet
from read_server.sources.replica import Routed
from read_server.watch.rpcs import WatchRpcs
from read_server.watch.streams import Watching
from read_server.webhooks.rpcs import WebhookRpcs
from read_server.wire import list_response

Rpc = Callable[[Any, Message, grpc.aio.ServicerContext], Awaitable[bytes]]
StreamRpc = Callable[[Any, Message, grpc.aio.ServicerContext], AsyncIterator[bytes]]


class QueryServicer(HistoryRpcs, AnalyticsRpcs, SearchRpcs, WebhookRpcs, WatchRpcs):
    """Thin async handlers: the entity reads over a :class:`SourceSet` (installed below,
    a Get, a List and a Watch per entity); the event history, analytics, search, webhook
    and Watch RPCs come from their mixins (one module each)."""

    def __init__(
        self,
        sources: SourceSet,
        consistency_wait_max_s: float,
        reads: Reads | Routed[Reads] | None = None,
        watching: Watching | None = None,
        parked: ParkedDocuments | None = None,
    ) -> None:
        self._sources = sources
        self._parked = parked
        self._max_wait_s = consistency_wait_max_s
        # Only the entity reads work without ``reads`` (unit tests over fake sources).
        self._maybe_reads = reads
        self._watching = watching

    async def enter_graceful_shutdown(self) -> None:
        """Watch streams end (told to reconnect elsewhere) so the server can stop."""
        if self._watching is not None:
            self._watching.hub.shut_down()

    @property
    def _reads(self) -> Reads:
        """The reads over the database that answers now (the primary, or the replica while
        it is in rotation): take them once per request, so all of it reads one database."""
        reads = self._maybe_reads
        if reads is None:
            raise RuntimeError("this servicer was built without PostgreSQL reads")
        return reads.now() if isinstance(reads, Routed) else reads

    def _wait_budget(self, context: grpc.aio.ServicerContext) -> float:
        return wait_budget(context, self._max_wait_s)

    async def get_entity(
        self, entity: Entity, request: Any, context: grpc.aio.ServicerContext
    ) -> bytes:
        """``Get<Entity>``: ``{id, source, consistency_token}`` -> the document."""
        p = RequestParser()
        ident = p.entity_id(request.id)
        source = p.source(request.source, self._sources)
        freshness = p.freshness(request.consistency_token, self._wait_budget(context))
        p.done()
        if self._parked is not None:
            self._refuse_parked(entity, ident, source)
        doc = await source.get(entity, ident, freshness)
        if doc is None:
            raise NotFound(f"{entity.label} {ident} not found")
        return doc

    def _refuse_parked(self, entity: Entity, ident: str, source: object) -> None:
        """FAILED_PRECONDITION for a document its projection parked (read_server.parked)."""
        assert self._parked is not None
        if source is self._sources.projection:
            consumer = f"redis:{entity.name}"
        elif source is self._sources.read_model:
            consumer = f"pg:{entity.name}"
        else:
            return  # the write model: the truth, never parked
        self._parked.check(consumer, entity.aggregate_type, ident, entity.label)

    async def list_entity(
        self, entity: Entity, request: Any, context: grpc.aio.ServicerContext
    ) -> bytes:
        """``List<Entities>``: a page, filtered by the request's fields named like the
        entity's filters (``category``; ``customer_id`` and ``status``)."""
        p = RequestParser()
        page = p.page(request.page_size, request.page_token)
        where = p.where(entity, request)
        source = p.source(request.source, self._sources)
        freshness = p.freshness(request.consistency_token, self._wait_budget(context))
        p.done()
        return _list(await source.list(entity, page, where, freshness))


def _get_rpc(entity: Entity) -> Rpc:
    async def rpc(
        self: QueryServicer, request: Message, context: grpc.aio.ServicerContext
    ) -> bytes:
        return await self.get_entity(entity, request, context)

    rpc.__name__ = rpc.__qualname__ = entity.get_rpc
    return rpc


def _list_rpc(entity: Entity) -> Rpc:
    async def rpc(
        self: QueryServicer, request: Message, context: grpc.aio.ServicerContext
    ) -> bytes:
        return await self.list_entity(entity, request, context)

    rpc.__name__ = rpc.__qualname__ = entity.list_rpc
    return rpc


def _watch_rpc(entity: Entity) -> StreamRpc:
    async def rpc(
        self: QueryServicer, request: Message, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[bytes]:
        async for out in self.watch_entity(entity, request, context):
            yield out

    rpc.__name__ = rpc.__qualname__ = entity.watch_rpc
    return rpc


# One Get, one List and one Watch per entity of the registry, named like the RPCs.
for _entity in ENTITIES:
    setattr(QueryServicer, _entity.get_rpc, _get_rpc(_entity))
    setattr(QueryServicer, _entity.list_rpc, _list_rpc(_entity))
    setattr(QueryServicer, _entity.watch_rpc, _watch_rpc(_entity))


def _next_token(key: SortKey | None) -> str:
    return "" if key is None else encode_page_token(key)


def _list(page: Page) -> bytes:
    return list_response(page.items, _next_token(page.next_key))
