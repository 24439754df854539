"""SearchProducts and SearchCustomers (QueryService): full-text search on the PostgreSQL
read models, best match first (see :mod:`read_server.search.sql`)."""

from __future__ import annotations

import grpc

from common.pb.shop.v1 import query_service_pb2 as qs
from read_server.reads import RpcMixin
from read_server.requests import RequestParser
from read_server.search.cursor import (
    InvalidSearchToken,
    SearchCursor,
    cursor_for,
    decode_search_token,
    encode_search_token,
    query_digest,
)
from read_server.search.query import InvalidQuery, SearchQuery, parse_query
from read_server.search.sql import CUSTOMERS, PRODUCTS, SearchTarget, search_page
from read_server.wire import list_response

_SearchRequest = qs.SearchProductsRequest | qs.SearchCustomersRequest


class SearchRpcs(RpcMixin):
    """Mixin of :class:`read_server.servicer.QueryServicer`."""

    async def SearchProducts(
        self, request: qs.SearchProductsRequest, context: grpc.aio.ServicerContext
    ) -> bytes:
        """Live products matching every word of ``query`` (as prefixes), best first."""
        return await self._search(PRODUCTS, request, context)

    async def SearchCustomers(
        self, request: qs.SearchCustomersRequest, context: grpc.aio.ServicerContext
    ) -> bytes:
        """Live customers whose name or email matches every word of ``query``, best first."""
        return await self._search(CUSTOMERS, request, context)

    async def _search(
        self, target: SearchTarget, request: _SearchRequest, context: grpc.aio.ServicerContext
    ) -> bytes:
        p = RequestParser()
        query = _query(p, request.query)
        size = p.page_size(request.page_size)
        after = _cursor(p, target, query, request.page_token)
        freshness = p.freshness(request.consistency_token, self._wait_budget(context))
        p.done()
        assert query is not None  # p.done() raised otherwise
        reads = self._reads  # the token waited for and the rows read on one database
        await reads.read_model.ready(target.entity, freshness)
        page = await search_page(reads.pool, target, query, size, after)
        digest = query_digest(target.entity, query)
        token = "" if page.next is None else encode_search_token(digest, page.next)
        # Search responses have the List*Response layout (documents = 1, token = 2).
        return list_response(page.items, token)


def _query(p: RequestParser, text: str) -> SearchQuery | None:
    try:
        return parse_query(text)
    except InvalidQuery as exc:
        p.bad("query", str(exc))
        return None


def _cursor(
    p: RequestParser, target: SearchTarget, query: SearchQuery | None, token: str
) -> SearchCursor | None:
    """The token's cursor; with an unusable query, only the token's own form is checked."""
    try:
        if query is None:
            decoded = decode_search_token(token)
            return None if decoded is None else decoded[1]
        return cursor_for(target.entity, query, token)
    except InvalidSearchToken as exc:
        p.bad("page_token", str(exc))
        return None
