"""The three query sources answer identically from the same data (Redis, read.*, write tables)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

import pytest
from google.protobuf.message import Message

from common.cursors import decode_page_token, encode_page_token
from common.documents import status_name
from common.entities import CUSTOMERS, ORDERS, PRODUCTS
from common.pb.shop.v1 import shop_pb2
from common.settings import Settings
from read_server.sources.base import ANY_FRESHNESS, Page, PageRequest, QuerySource
from tests.support.paging import PageGuard
from tests.support.read_fixtures import Loaded, ReadDataset, loaded_sources, newest_first

pytestmark = pytest.mark.integration

SOURCE_NAMES = ("projection", "read_model", "write_model")


@pytest.fixture
async def loaded(settings: Settings) -> AsyncIterator[Loaded]:
    async with loaded_sources(settings) as loaded:
        yield loaded


def _ser(docs: Sequence[Message]) -> list[bytes]:
    return [d.SerializeToString() for d in docs]


async def test_gets_are_identical_across_sources(loaded: Loaded) -> None:
    ds = loaded.ds
    for source in loaded.sources():
        for product in ds.products:
            assert await source.get(PRODUCTS, product.id, ANY_FRESHNESS) == (
                product.SerializeToString()
            )
        for customer in ds.customers:
            assert await source.get(CUSTOMERS, customer.id, ANY_FRESHNESS) == (
                customer.SerializeToString()
            )
        for order in ds.orders:
            assert await source.get(ORDERS, order.id, ANY_FRESHNESS) == order.SerializeToString()


async def test_deleted_and_unknown_entities_are_absent_everywhere(loaded: Loaded) -> None:
    ds = loaded.ds
    unknown = str(uuid.uuid4())
    for source in loaded.sources():
        for product_id in (ds.deleted_products[0].id, unknown):
            assert await source.get(PRODUCTS, product_id, ANY_FRESHNESS) is None
        for customer_id in (ds.deleted_customers[0].id, unknown):
            assert await source.get(CUSTOMERS, customer_id, ANY_FRESHNESS) is None
        for order_id in (ds.deleted_orders[0].id, unknown):
            assert await source.get(ORDERS, order_id, ANY_FRESHNESS) is None


async def test_orders_of_a_deleted_customer_stay_visible_with_its_name(loaded: Loaded) -> None:
    gone = loaded.ds.deleted_customers[0]
    expected = newest_first(loaded.ds.orders, lambda o: o.customer_id == gone.id)
    assert expected and all(o.customer_name == gone.name for o in expected)
    for source in loaded.sources():
        page = await source.list(ORDERS, PageRequest(100), {"customer_id": gone.id}, ANY_FRESHNESS)
        assert page.items == _ser(expected)


ListCall = Callable[[QuerySource, PageRequest], Awaitable[Page]]


def _products_in(category: str | None) -> ListCall:
    where = {} if category is None else {"category": category}
    return lambda source, page: source.list(PRODUCTS, page, where, ANY_FRESHNESS)


# (customer_id, status), either None: a filter of the orders.
OrderWhere = tuple[str | None, str | None]


def _orders_where(f: OrderWhere) -> ListCall:
    pairs = (("customer_id", f[0]), ("status", f[1]))
    where = {k: v for k, v in pairs if v is not None}
    return lambda source, page: source.list(ORDERS, page, where, ANY_FRESHNESS)


def _selects(f: OrderWhere) -> Callable[[shop_pb2.Order], bool]:
    def keep(order: shop_pb2.Order) -> bool:
        return f[0] in (None, order.customer_id) and f[1] in (None, status_name(order.status))

    return keep


def _list_cases(ds: ReadDataset) -> dict[str, tuple[ListCall, list[bytes]]]:
    """name -> (how to list one page from a source, the full expected list)."""
    cases: dict[str, tuple[ListCall, list[bytes]]] = {
        "products": (_products_in(None), _ser(newest_first(ds.products))),
        "products/none": (_products_in("no-such-category"), []),
        "customers": (
            lambda source, page: source.list(CUSTOMERS, page, {}, ANY_FRESHNESS),
            _ser(newest_first(ds.customers)),
        ),
    }
    for category in {p.category for p in ds.products}:
        in_category = [p for p in ds.products if p.category == category]
        cases[f"products/{category}"] = (_products_in(category), _ser(newest_first(in_category)))
    filters: set[OrderWhere] = {(None, None), (None, "PENDING"), (_nobody(), None)}
    for o in ds.orders:
        status = status_name(o.status)
        filters |= {(o.customer_id, None), (None, status), (o.customer_id, status)}
    for f in filters:
        expected = _ser(newest_first(ds.orders, _selects(f)))
        cases[f"orders/{f[0]}/{f[1]}"] = (_orders_where(f), expected)
    return cases


def _nobody() -> str:
    return str(uuid.uuid4())


async def _walk(list_page: ListCall, source: QuerySource, size: int) -> tuple[list[bytes], int]:
    """Every item, following next tokens (encoded and decoded like a client would)."""
    items: list[bytes] = []
    token = ""
    pages = 0
    guard = PageGuard()
    while True:
        page = await list_page(source, PageRequest(size, decode_page_token(token)))
        pages += 1
        assert len(page.items) <= size
        items += page.items
        if page.next_key is None:
            return items, pages
        assert len(page.items) == size  # a token only after a full page
        token = guard.next(encode_page_token(page.next_key))


async def test_lists_are_identical_across_sources_and_pages(loaded: Loaded) -> None:
    cases = _list_cases(loaded.ds)
    assert len(cases) > 10
    for size in (1, 2, 3, 1000):
        for name, (list_page, expected) in cases.items():
            for source_name, source in zip(SOURCE_NAMES, loaded.sources(), strict=True):
                where = f"{name} via {source_name}, page size {size}"
                items, pages = await _walk(list_page, source, size)
                assert items == expected, where
                # No empty trailing page when the list divides evenly.
                assert pages == max(1, -(-len(expected) // size)), where
