"""SearchProducts / SearchCustomers against a migrated PostgreSQL, over a real gRPC server.

Most tests fill the read models directly (the rows a projection would write); the
last ones let the projector write them, delete and rename entities, and rebuild
the products projection (shadow table swap) under the search.
"""

from __future__ import annotations

import asyncio
import io
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import asyncpg
import grpc
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from common.documents import timestamp
from common.pb.shop.v1 import query_service_pb2 as qs
from common.pb.shop.v1 import query_service_pb2_grpc, shop_pb2
from common.positions import Position, encode_token
from common.settings import Settings
from projector import rebuild as rebuild_module
from projector.bootstrap import App as ProjectorApp
from read_server.bootstrap import App, bootstrap
from read_server.search.query import InvalidQuery, parse_query
from read_server.search.sql import CUSTOMERS, PRODUCTS, search_page
from read_server.server import create_server
from tests.support.events import Shop
from tests.support.paging import PageGuard
from tests.support.projector import wait_applied
from tests.support.read_fixtures import CHECKPOINT, T0, set_pg_checkpoint

pytestmark = pytest.mark.integration

FILLER = 120  # "Item n" products, for paging


@dataclass
class Search:
    """A read server over a database holding :func:`_load`'s rows, and a stub to it."""

    app: App
    stub: Any  # QueryServiceStub (untyped generated code)
    products: dict[str, str]  # name -> id
    customers: dict[str, str]

    async def products_named(self, query: str, **kw: Any) -> list[str]:
        reply = await self.stub.SearchProducts(qs.SearchProductsRequest(query=query, **kw))
        return [p.name for p in reply.products]

    async def customers_named(self, query: str, **kw: Any) -> list[str]:
        reply = await self.stub.SearchCustomers(qs.SearchCustomersRequest(query=query, **kw))
        return [c.name for c in reply.customers]


@asynccontextmanager
async def serving(app: App) -> AsyncIterator[Any]:
    """The read server on a free port; a QueryService stub to it."""
    built = create_server(app, "127.0.0.1:0")
    await built.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{built.port}") as channel:
            yield query_service_pb2_grpc.QueryServiceStub(channel)
    finally:
        await built.server.stop(None)


PRODUCT_ROWS = [
    # name, description, category
    ("Blue Widget", "a small part", "parts"),
    ("Gadget", "works with any widget", "parts"),
    ("Widgetry Deluxe", "", "tools"),
    ("Green Lamp", "", "widgets"),
    ("Red Lamp", "blue glass", "home"),
    ("Übergröße Vase", "keramik", "home"),
    ("日本語テキスト", "", "books"),
    ("O'Brien's \\ \"quoted\" & <odd> name", "", "odd"),
]
CUSTOMER_ROWS = [
    ("Ann Smith", "ann.smith@example.org"),
    ("Annette Ng", "a.ng@other.net"),
    ("Bob Jones", "bob+shop@example.org"),
    ("Carla Díaz", "carla_diaz@mail.example.com"),
]


async def _insert_product(
    conn: asyncpg.Connection, name: str, description: str, category: str, n: int
) -> str:
    ident = uuid.uuid4()
    at = T0 + timedelta(seconds=n)
    doc = shop_pb2.Product(
        id=str(ident), name=name, description=description, price_cents=100, currency="EUR",
        category=category, stock=1, version=1, created_at=timestamp(at), updated_at=timestamp(at),
    )  # fmt: skip
    await conn.execute(
        "INSERT INTO read.product_read_model (id, name, description, price_cents, currency,"
        " category, stock, version, created_at, updated_at, doc)"
        " VALUES ($1, $2, $3, 100, 'EUR', $4, 1, 1, $5, $5, $6)",
        ident,
        name,
        description,
        category,
        at,
        doc.SerializeToString(),
    )
    return str(ident)


async def _insert_customer(conn: asyncpg.Connection, name: str, email: str, n: int) -> str:
    ident = uuid.uuid4()
    at = T0 + timedelta(seconds=n)
    doc = shop_pb2.Customer(
        id=str(ident), name=name, email=email, address="1 Main St", city="Glasgow",
        postal_code="G1", country="GB", version=1, created_at=timestamp(at),
        updated_at=timestamp(at),
    )  # fmt: skip
    await conn.execute(
        "INSERT INTO read.customer_read_model (id, name, email, address, city, postal_code,"
        " country, version, created_at, updated_at, doc)"
        " VALUES ($1, $2, $3, '1 Main St', 'Glasgow', 'G1', 'GB', 1, $4, $4, $5)",
        ident,
        name,
        email,
        at,
        doc.SerializeToString(),
    )
    return str(ident)


async def _load(settings: Settings) -> tuple[dict[str, str], dict[str, str]]:
    conn = await asyncpg.connect(settings.asyncpg_dsn)
    products: dict[str, str] = {}
    customers: dict[str, str] = {}
    try:
        async with conn.transaction():
            for n, (name, description, category) in enumerate(PRODUCT_ROWS):
                products[name] = await _insert_product(conn, name, description, category, n)
            for i in range(FILLER):
                # Ranks vary ("item" also 0-2 times in the description) and tie a lot.
                name = f"Item {i}"
                description = " ".join(["item"] * (i % 3))
                products[name] = await _insert_product(conn, name, description, "bulk", 100 + i)
            for n, (name, email) in enumerate(CUSTOMER_ROWS):
                customers[name] = await _insert_customer(conn, name, email, n)
            for projection in ("pg:products", "pg:customers"):
                await set_pg_checkpoint(conn, projection, CHECKPOINT)
    finally:
        await conn.close()
    return products, customers


@pytest.fixture
async def search(settings: Settings) -> AsyncIterator[Search]:
    products, customers = await _load(settings)
    app = await bootstrap(settings)
    try:
        async with serving(app) as stub:
            yield Search(app, stub, products, customers)
    finally:
        await app.close()


async def _error(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


async def test_name_match_ranks_above_category_and_description_matches(search: Search) -> None:
    names = await search.products_named("widget")
    # Name (weight A) first, then category (B), then description (C).
    assert names[:2] == sorted(["Blue Widget", "Widgetry Deluxe"], key=search.products.get)
    assert names[2:] == ["Green Lamp", "Gadget"]


async def test_words_match_as_prefixes_ignoring_case(search: Search) -> None:
    assert await search.products_named("wid") == await search.products_named("widget")
    assert set(await search.products_named("WID")) >= {"Blue Widget", "Widgetry Deluxe"}
    assert await search.products_named("übergr") == ["Übergröße Vase"]
    assert await search.products_named("日本") == ["日本語テキスト"]
    assert await search.products_named("brien quot") == ["O'Brien's \\ \"quoted\" & <odd> name"]


async def test_every_word_must_match(search: Search) -> None:
    assert await search.products_named("blue wid") == ["Blue Widget"]
    assert await search.products_named("lamp blue") == ["Red Lamp"]  # name + description
    assert await search.products_named("blue lamp green") == []
    assert await search.products_named("widget nothing") == []


async def test_customers_by_name_full_email_and_domain(search: Search) -> None:
    assert await search.customers_named("ann.smith@example.org") == ["Ann Smith"]
    assert await search.customers_named("ANN.SMITH@EXAMPLE.ORG") == ["Ann Smith"]
    domain = await search.customers_named("example.org")
    assert sorted(domain) == ["Ann Smith", "Bob Jones"]
    assert await search.customers_named("bob+shop@example.org") == ["Bob Jones"]
    assert await search.customers_named("mail.example") == ["Carla Díaz"]
    assert await search.customers_named("carla_diaz") == ["Carla Díaz"]
    assert await search.customers_named("díaz") == ["Carla Díaz"]
    # Name (A) and the email's words (B): "ann" is in both for Ann Smith.
    assert await search.customers_named("ann") == ["Ann Smith", "Annette Ng"]
    assert await search.customers_named("other.net ng") == ["Annette Ng"]


async def test_paging_covers_every_hit_once_in_rank_order(search: Search) -> None:
    whole = await search.stub.SearchProducts(qs.SearchProductsRequest(query="item", page_size=1000))
    assert len(whole.products) == FILLER and whole.next_page_token == ""
    ids = [p.id for p in whole.products]
    # Ties (same rank) are broken by id, ascending.
    for rank_class in (2, 1, 0):  # "item" in the description 2, 1, 0 times
        group = [p.id for p in whole.products if p.description.count("item") == rank_class]
        assert group == sorted(group)
    assert [p.description.count("item") for p in whole.products] == sorted(
        (p.description.count("item") for p in whole.products), reverse=True
    )
    for size in (1, 7, 40, 119, 120):
        paged: list[str] = []
        token, guard = "", PageGuard()
        while True:
            reply = await search.stub.SearchProducts(
                qs.SearchProductsRequest(query="item", page_size=size, page_token=token)
            )
            assert len(reply.products) <= size
            paged += [p.id for p in reply.products]
            if not reply.next_page_token:
                break
            token = guard.next(reply.next_page_token)
        assert paged == ids, size


async def test_default_and_maximum_page_sizes(search: Search) -> None:
    reply = await search.stub.SearchProducts(qs.SearchProductsRequest(query="item"))
    assert len(reply.products) == 50 and reply.next_page_token
    error = await _error(
        search.stub.SearchCustomers(qs.SearchCustomersRequest(query="ann", page_size=1001))
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_page_token_of_another_query_or_search_is_invalid(search: Search) -> None:
    first = await search.stub.SearchProducts(qs.SearchProductsRequest(query="item", page_size=2))
    token = first.next_page_token
    # The same words however typed: the same query.
    again = await search.stub.SearchProducts(
        qs.SearchProductsRequest(query=" item!! ", page_size=2, page_token=token)
    )
    assert len(again.products) == 2
    for call in (
        search.stub.SearchProducts(qs.SearchProductsRequest(query="items", page_token=token)),
        search.stub.SearchCustomers(qs.SearchCustomersRequest(query="item", page_token=token)),
        search.stub.SearchProducts(qs.SearchProductsRequest(query="item", page_token="x" + token)),
    ):
        error = await _error(call)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "page_token" in (error.details() or "")


HOSTILE = [
    "'",
    "''",
    "\\",
    "\\'",
    "'a",
    "a'",
    "a''b",
    "a\\'b",
    "&",
    "a & b",
    "a | b",
    "!a",
    "a:*",
    "a:*A",
    ":*",
    "(a",
    "a)",
    "a <-> b",
    "<2>",
    "a <",
    "'); DROP TABLE read.product_read_model; --",
    "1' OR '1'='1",
    "$1",
    "%_",
    "😀",
    "😀 widget 😀",
    "x\u0301",
    "\u200b",
    "\u202eevil",
    "Ωμέγα",
    "العربية",
    "ไทย",
    "한국어",
    "\x7f\x1b[31m",
    "\t\n\r",
    "a" * 200,
    "a" * 201,
    "é" * 200,
    "😀" * 200,
    " ".join("abcdefghijklmnop"),
    " ".join("abcdefghijklmnopq"),
    "_" * 50,
    "٣٤٥ ²³",
    "ﬁ ǅ İstanbul",
    "\ufeffbom",
    "",
    " ",
]


async def test_hostile_queries_answer_ok_or_invalid_argument(search: Search) -> None:
    for text in HOSTILE:
        for call in (
            search.stub.SearchProducts(qs.SearchProductsRequest(query=text, page_size=3)),
            search.stub.SearchCustomers(qs.SearchCustomersRequest(query=text, page_size=3)),
        ):
            try:
                await call
            except grpc.aio.AioRpcError as error:
                assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (text, error)
                assert "query" in (error.details() or ""), text
    # The tables are intact.
    assert await search.products_named("blue widget") == ["Blue Widget"]


@hypothesis_settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(text=st.text(max_size=220))
async def test_any_searchable_text_is_a_valid_postgres_tsquery(search: Search, text: str) -> None:
    try:
        query = parse_query(text)
    except InvalidQuery:
        return
    pool = search.app.reads.pool
    # Accepted by to_tsquery, and runs as the search statement on both read models.
    await pool.fetchval("SELECT to_tsquery('simple', $1)", query.tsquery)
    await search_page(pool, PRODUCTS, query, 5, None)
    await search_page(pool, CUSTOMERS, query, 5, None)


async def test_a_consistency_token_waits_for_the_pg_projection(
    search: Search, settings: Settings
) -> None:
    later = Position(CHECKPOINT.xid + 5, 0)
    request = qs.SearchProductsRequest(query="teapot", consistency_token=encode_token(later))
    # A deadline short of the consistency wait: the server answers UNAVAILABLE within it,
    # keeping back a margin (0.5 s of 2 s) to reply in on a loaded machine.
    error = await _error(search.stub.SearchProducts(request, timeout=2))
    assert error.code() == grpc.StatusCode.UNAVAILABLE

    async def catch_up() -> None:
        await asyncio.sleep(0.3)
        conn = await asyncpg.connect(settings.asyncpg_dsn)
        try:
            async with conn.transaction():
                await _insert_product(conn, "Teapot", "", "kitchen", 999)
                await set_pg_checkpoint(conn, "pg:products", later)
        finally:
            await conn.close()

    writer = asyncio.create_task(catch_up())
    reply = await search.stub.SearchProducts(request, timeout=5)
    await writer
    assert [p.name for p in reply.products] == ["Teapot"]


async def test_an_unbuilt_projection_is_unavailable(settings: Settings) -> None:
    app = await bootstrap(settings)  # no checkpoint rows: never built
    try:
        async with serving(app) as stub:
            for call in (
                stub.SearchProducts(qs.SearchProductsRequest(query="x"), timeout=1),
                stub.SearchCustomers(qs.SearchCustomersRequest(query="x"), timeout=1),
            ):
                assert (await _error(call)).code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await app.close()


# -- written by the projector ------------------------------------------------------------


async def _names(stub: Any, query: str) -> list[str]:
    reply = await stub.SearchProducts(qs.SearchProductsRequest(query=query, page_size=1000))
    return sorted(p.name for p in reply.products)


async def _search_index_used(pool: asyncpg.Pool, query: str) -> bool:
    """Whether the planner can serve the products search with its GIN index."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL enable_seqscan = off")
        plan = await conn.fetch("EXPLAIN " + PRODUCTS.first, parse_query(query).tsquery, 10)
    return any("product_read_model_search" in row[0] for row in plan)


async def _search_column_generated(pool: asyncpg.Pool, table: str) -> bool:
    generated = await pool.fetchval(
        "SELECT attgenerated::text FROM pg_attribute"
        " WHERE attrelid = $1::regclass AND attname = 'search' AND NOT attisdropped",
        f"read.{table}",
    )
    return bool(generated == "s")


async def test_projected_rows_deletes_renames_and_a_rebuild_keep_search_working(
    app: ProjectorApp,
) -> None:
    shop = Shop(app.pool)
    kept = await shop.create_product(name="Copper Kettle", description="whistling")
    gone = await shop.create_product(name="Copper Pan")
    renamed = await shop.create_product(name="Copper Pot")
    ann = await shop.create_customer(name="Ann Smith", email="ann@example.org")
    old = await shop.create_customer(name="Ann Gone", email="gone@example.org")
    await shop.delete_product(gone)
    await shop.update_product(renamed, name="Brass Pot")
    await shop.delete_customer(old)
    projections: Sequence[str] = ["pg:products", "pg:customers"]
    stop = asyncio.Event()
    run = asyncio.create_task(app.projector(projections).run(stop))
    reader = await bootstrap(app.settings)
    try:
        async with serving(reader) as stub:
            await wait_applied(app, projections)
            assert await _names(stub, "copper") == ["Copper Kettle"]
            assert await _names(stub, "brass") == ["Brass Pot"]
            customers = await stub.SearchCustomers(qs.SearchCustomersRequest(query="ann"))
            assert [c.id for c in customers.customers] == [ann]

            out = io.StringIO()
            code = await rebuild_module.rebuild(
                [app.consumer("pg:products")],
                app.pool,
                dsn=app.settings.asyncpg_dsn,
                batch_size=2,
                out=out,
            )
            assert code == 0, out.getvalue()
            # The swapped-in table kept the generated column and the index (by its name).
            assert await _search_column_generated(app.pool, "product_read_model")
            assert await _search_index_used(reader.pg_pool, "copper")
            assert await _names(stub, "copper") == ["Copper Kettle"]
            assert await _names(stub, "whistl") == ["Copper Kettle"]

            # The live runner goes on writing into the swapped-in table.
            await shop.update_product(kept, name="Steel Kettle")
            await shop.create_product(name="Copper Mug")
            await wait_applied(app, projections)
            assert await _names(stub, "copper") == ["Copper Mug"]
            assert await _names(stub, "kettle") == ["Steel Kettle"]
    finally:
        stop.set()
        await asyncio.wait_for(run, 10)
        await reader.close()
