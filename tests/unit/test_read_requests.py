"""Request validation: page sizes, page tokens, consistency tokens, ids, statuses, sources."""

from __future__ import annotations

import uuid

import pytest

from common.cursors import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, SortKey, encode_page_token
from common.entities import ORDERS, PRODUCTS
from common.errors import InvalidArgument
from common.pb.shop.v1 import query_service_pb2 as qs
from common.pb.shop.v1 import shop_pb2
from common.positions import Position, encode_token
from read_server.requests import RequestParser
from read_server.sources.base import SourceSet
from tests.support.read_fixtures import FakeSource


def _fields(parser: RequestParser) -> list[str]:
    with pytest.raises(InvalidArgument) as caught:
        parser.done()
    return [v.field for v in caught.value.violations]


def test_page_size_defaults_and_bounds() -> None:
    p = RequestParser()
    assert p.page(0, "").size == DEFAULT_PAGE_SIZE
    assert p.page(1, "").size == 1
    assert p.page(MAX_PAGE_SIZE, "").size == MAX_PAGE_SIZE
    p.done()
    for bad in (-1, MAX_PAGE_SIZE + 1):
        p = RequestParser()
        p.page(bad, "")
        assert _fields(p) == ["page_size"]


def test_page_tokens_round_trip_and_garbage_is_rejected() -> None:
    key = SortKey(1_700_000_000_123_456, str(uuid.uuid4()))
    p = RequestParser()
    assert p.page(10, encode_page_token(key)).after == key
    assert p.page(10, "").after is None
    p.done()
    for bad in ("garbage!", "YWJj", encode_page_token(SortKey(1, "not-a-uuid"))):
        p = RequestParser()
        p.page(10, bad)
        assert _fields(p) == ["page_token"], bad


def test_consistency_tokens() -> None:
    p = RequestParser()
    assert p.freshness("", 1.5).position is None
    fresh = p.freshness(encode_token(Position(77, 5)), 1.5)
    assert (fresh.position, fresh.max_wait_s) == (Position(77, 5), 1.5)
    p.done()
    for bad in ("nope", "c1.zz.1", "c1.1"):
        p = RequestParser()
        p.freshness(bad, 1.0)
        assert _fields(p) == ["consistency_token"], bad


def test_ids_are_validated_and_canonicalized() -> None:
    ident = uuid.uuid4()
    p = RequestParser()
    assert p.entity_id(str(ident).upper()) == str(ident)
    assert p.entity_id(ident.hex) == str(ident)
    assert p.optional_id("", "customer_id") is None
    p.done()
    p = RequestParser()
    p.entity_id("")
    p.entity_id("12345", "id")
    p.optional_id("zzz", "customer_id")
    assert _fields(p) == ["id", "id", "customer_id"]


def test_enum_filters() -> None:
    p = RequestParser()
    assert p.enum(qs.ListOrdersRequest(), "status") is None  # UNSPECIFIED: no filter
    shipped = qs.ListOrdersRequest(status=shop_pb2.ORDER_STATUS_SHIPPED)
    assert p.enum(shipped, "status") == "SHIPPED"
    p.done()
    p.enum(qs.ListOrdersRequest(status=42), "status")  # type: ignore[arg-type]
    assert _fields(p) == ["status"]


def test_where_reads_the_entity_filters_from_the_request() -> None:
    customer = str(uuid.uuid4())
    request = qs.ListOrdersRequest(
        customer_id=customer.upper(), status=shop_pb2.ORDER_STATUS_PENDING
    )
    p = RequestParser()
    assert p.where(ORDERS, request) == {"customer_id": customer, "status": "PENDING"}
    assert p.where(PRODUCTS, qs.ListProductsRequest(category="books")) == {"category": "books"}
    assert p.where(PRODUCTS, qs.ListProductsRequest()) == {}  # "": every category
    p.done()
    p.where(ORDERS, qs.ListOrdersRequest(customer_id="not-a-uuid"))
    assert _fields(p) == ["customer_id"]


def test_sources() -> None:
    projection, read_model, write_model = FakeSource(), FakeSource(), FakeSource()
    sources = SourceSet(projection, read_model, write_model)
    p = RequestParser()
    assert p.source(qs.SOURCE_UNSPECIFIED, sources) is projection
    assert p.source(qs.SOURCE_PROJECTION, sources) is projection
    assert p.source(qs.SOURCE_READ_MODEL, sources) is read_model
    assert p.source(qs.SOURCE_WRITE_MODEL, sources) is write_model
    p.done()
    p.source(9, sources)
    assert _fields(p) == ["source"]


def test_all_violations_are_reported_together() -> None:
    p = RequestParser()
    p.page(-5, "%%%")
    p.optional_id("x", "customer_id")
    p.freshness("bad", 1.0)
    assert _fields(p) == ["page_size", "page_token", "customer_id", "consistency_token"]
