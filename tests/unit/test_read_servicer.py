"""The servicer over fake sources: source choice, NOT_FOUND, list bytes, wait budgets."""

from __future__ import annotations

import uuid

import pytest

from common.cursors import SortKey, decode_page_token
from common.errors import InvalidArgument, NotFound
from common.pb.shop.v1 import query_service_pb2 as qs
from common.pb.shop.v1 import shop_pb2
from common.positions import Position, encode_token
from read_server.servicer import QueryServicer
from read_server.sources.base import Page, PageRequest, SourceSet
from tests.support.read_fixtures import FakeContext, FakeSource

KEY = SortKey(1_700_000_000_000_000, "6f1c54a4-2f5e-4a57-9a43-3b7f0b0c7f11")


def _servicer(max_wait_ms: int = 2000) -> tuple[QueryServicer, FakeSource, FakeSource, FakeSource]:
    projection, read_model, write_model = FakeSource(), FakeSource(), FakeSource()
    servicer = QueryServicer(SourceSet(projection, read_model, write_model), max_wait_ms / 1000)
    return servicer, projection, read_model, write_model


async def test_get_returns_the_stored_bytes_from_the_chosen_source() -> None:
    servicer, projection, read_model, _ = _servicer()
    ident = str(uuid.uuid4())
    product = shop_pb2.Product(id=ident, name="x").SerializeToString()
    read_model.docs[ident] = product
    request = qs.GetProductRequest(id=ident.upper(), source=qs.SOURCE_READ_MODEL)
    assert await servicer.GetProduct(request, FakeContext()) is product
    assert read_model.calls[0][:3] == ("get", "products", ident)
    assert projection.calls == []


async def test_missing_entities_are_not_found() -> None:
    servicer, *_ = _servicer()
    ident = str(uuid.uuid4())
    with pytest.raises(NotFound, match=f"customer {ident} not found"):
        await servicer.GetCustomer(qs.GetCustomerRequest(id=ident), FakeContext())
    with pytest.raises(NotFound, match="order"):
        await servicer.GetOrder(qs.GetOrderRequest(id=ident), FakeContext())


async def test_invalid_requests_never_reach_a_source() -> None:
    servicer, projection, *_ = _servicer()
    with pytest.raises(InvalidArgument):
        await servicer.ListOrders(qs.ListOrdersRequest(page_size=-3), FakeContext())
    assert projection.calls == []


async def test_lists_are_wire_bytes_with_a_next_page_token() -> None:
    servicer, projection, *_ = _servicer()
    docs = [shop_pb2.Order(id=str(uuid.uuid4()), order_number=f"N{i}") for i in range(3)]
    projection.page = Page([d.SerializeToString() for d in docs], KEY)
    customer = str(uuid.uuid4())
    request = qs.ListOrdersRequest(
        page_size=3, customer_id=customer, status=shop_pb2.ORDER_STATUS_CANCELLED
    )
    wire = await servicer.ListOrders(request, FakeContext())
    response = qs.ListOrdersResponse.FromString(wire)
    assert list(response.orders) == docs
    assert decode_page_token(response.next_page_token) == KEY
    _, entity, page, where, _ = projection.calls[0]
    assert (entity, page) == ("orders", PageRequest(3, None))
    assert where == {"customer_id": customer, "status": "CANCELLED"}


async def test_last_page_has_no_token_and_empty_category_means_all() -> None:
    servicer, projection, *_ = _servicer()
    wire = await servicer.ListProducts(qs.ListProductsRequest(), FakeContext())
    assert wire == b""
    assert qs.ListProductsResponse.FromString(wire).next_page_token == ""
    _, entity, page, where, _ = projection.calls[0]
    assert (entity, page.size, where) == ("products", 50, {})


@pytest.mark.parametrize(
    ("max_wait_ms", "remaining", "budget"),
    [
        (2000, None, 2.0),  # no deadline: the configured maximum
        (2000, 10.0, 2.0),
        (2000, 0.9, 0.6),  # keeps a third of the time to answer before the deadline
        (2000, 0.6, 0.4),
        (2000, 0.25, 0.1),  # ...but at least 150 ms
        (2000, 0.12, 0.0),
        (9000, 4.0, 3.5),  # ...and at most half a second
        (2000, 0.0, 0.0),
    ],
)
async def test_wait_budget_is_bounded_by_settings_and_deadline(
    max_wait_ms: int, remaining: float | None, budget: float
) -> None:
    servicer, projection, *_ = _servicer(max_wait_ms)
    token = encode_token(Position(9, 9))
    request = qs.ListCustomersRequest(consistency_token=token)
    await servicer.ListCustomers(request, FakeContext(remaining))
    freshness = projection.calls[0][-1]
    assert freshness.position == Position(9, 9)
    assert freshness.max_wait_s == pytest.approx(budget)
