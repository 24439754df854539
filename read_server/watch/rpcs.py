"""``Watch<Entity>`` (one per entity of the registry, installed by the servicer) and
``WatchOrders``: server-streaming RPCs over the process's :class:`WatchHub`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc

from common.entities import Entity
from common.errors import Unavailable
from common.rpc.auth import current_subject
from read_server.reads import RpcMixin
from read_server.requests import RequestParser
from read_server.sources.base import Freshness
from read_server.watch.streams import Watching, document_stream, orders_feed


class WatchRpcs(RpcMixin):
    """Validate, open a subscription, stream; the subscription is closed however the
    stream ends (the client cancels, the server shuts down, an error)."""

    _watching: Watching | None = None

    def _watch_parts(self) -> Watching:
        if self._watching is None:
            raise Unavailable("Watch streams are off on this server (CQRS_WATCH_STREAMS_MAX=0)")
        return self._watching

    def _parse_watch(
        self, p: RequestParser, request: Any, context: grpc.aio.ServicerContext
    ) -> tuple[Freshness, Any]:
        p.projection_only(request.source)
        freshness = p.freshness(request.consistency_token, self._wait_budget(context))
        resume = p.position(request.resume_after, "resume_after")
        return freshness, resume

    async def watch_entity(
        self, entity: Entity, request: Any, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[bytes]:
        """``Watch<Entity>``: ``{id, source, consistency_token, resume_after}``."""
        p = RequestParser()
        ident = p.entity_id(request.id)
        freshness, resume = self._parse_watch(p, request, context)
        p.done()
        w = self._watch_parts()
        sub = w.hub.open((entity.name, ident), current_subject(context))
        try:
            async for out in document_stream(w, entity, ident, sub, freshness, resume):
                yield out
        finally:
            sub.close()

    async def WatchOrders(
        self, request: Any, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[bytes]:
        """``{customer_id?, source, consistency_token, resume_after}``."""
        p = RequestParser()
        customer = p.optional_id(request.customer_id, "customer_id")
        freshness, resume = self._parse_watch(p, request, context)
        p.done()
        w = self._watch_parts()
        sub = w.hub.open_feed(customer, current_subject(context))
        try:
            async for out in orders_feed(w, customer, sub, freshness, resume):
                yield out
        finally:
            sub.close()
