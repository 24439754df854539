"""Search over the real processes: a write on the CommandService is found by
SearchProducts / SearchCustomers as soon as the read carries its consistency token;
renames and deletes are followed the same way."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from common.pb.shop.v1 import command_service_pb2 as cpb
from common.pb.shop.v1 import command_service_pb2_grpc as cpb_grpc
from common.pb.shop.v1 import query_service_pb2 as qpb
from common.pb.shop.v1 import query_service_pb2_grpc as qpb_grpc
from common.settings import Settings
from tests.faults.load import wait_visible
from tests.support.servers import field_violations
from tests.support.system import System, running

pytestmark = pytest.mark.e2e


@pytest.fixture
async def system(settings: Settings, tmp_path: Path) -> AsyncIterator[System]:
    """The three processes, once the projector has built every projection (its first
    start builds them from the log; until then reads answer UNAVAILABLE)."""
    with running(settings, tmp_path) as system:
        async with (
            grpc.aio.insecure_channel(system.write) as write_channel,
            grpc.aio.insecure_channel(system.read) as read_channel,
        ):
            write = cpb_grpc.CommandServiceStub(write_channel)
            warm = await write.CreateProduct(_product("Warm-up"))
            await wait_visible(qpb_grpc.QueryServiceStub(read_channel), warm.consistency_token)
        yield system


def _product(
    name: str, description: str = "", category: str = "kitchen"
) -> cpb.CreateProductRequest:
    return cpb.CreateProductRequest(
        name=name,
        description=description,
        price_cents=1250,
        currency="EUR",
        category=category,
        stock=5,
    )


async def test_writes_are_found_by_search_with_their_token(system: System) -> None:
    async with (
        grpc.aio.insecure_channel(system.write) as write_channel,
        grpc.aio.insecure_channel(system.read) as read_channel,
    ):
        write = cpb_grpc.CommandServiceStub(write_channel)
        read = qpb_grpc.QueryServiceStub(read_channel)

        async def products(query: str, token: str, **kw: int) -> list[str]:
            request = qpb.SearchProductsRequest(query=query, consistency_token=token, **kw)
            reply = await read.SearchProducts(request, timeout=10)
            return [p.name for p in reply.products]

        async def customers(query: str, token: str) -> list[str]:
            request = qpb.SearchCustomersRequest(query=query, consistency_token=token)
            reply = await read.SearchCustomers(request, timeout=10)
            return [c.name for c in reply.customers]

        cup = await write.CreateProduct(_product("Espresso cup", "90 ml, stoneware"))
        saucer = await write.CreateProduct(_product("Saucer", "fits the espresso cup"))
        # The very next read with the token sees the write: no polling.
        assert await products("espr cup", saucer.consistency_token) == ["Espresso cup", "Saucer"]
        assert await products("ESPRESSO stone", saucer.consistency_token) == ["Espresso cup"]

        ann = await write.CreateCustomer(
            cpb.CreateCustomerRequest(name="Ann Smith", email="Ann.Smith@Example.org")
        )
        bob = await write.CreateCustomer(
            cpb.CreateCustomerRequest(name="Bob Jones", email="bob@example.org")
        )
        assert await customers("ann.smith@example.org", bob.consistency_token) == ["Ann Smith"]
        assert sorted(await customers("example.org", bob.consistency_token)) == [
            "Ann Smith",
            "Bob Jones",
        ]

        # Paging over the wire: one hit per page, every hit once.
        first = await read.SearchProducts(
            qpb.SearchProductsRequest(query="espresso", page_size=1), timeout=10
        )
        second = await read.SearchProducts(
            qpb.SearchProductsRequest(
                query="espresso", page_size=1, page_token=first.next_page_token
            ),
            timeout=10,
        )
        assert [p.id for p in (*first.products, *second.products)] == [cup.id, saucer.id]
        assert second.next_page_token == ""

        renamed = await write.UpdateProduct(cpb.UpdateProductRequest(id=cup.id, name="Latte mug"))
        assert await products("espresso", renamed.consistency_token) == ["Saucer"]
        assert await products("latte", renamed.consistency_token) == ["Latte mug"]
        deleted = await write.DeleteProduct(cpb.DeleteProductRequest(id=saucer.id))
        assert await products("espresso", deleted.consistency_token) == []
        gone = await write.DeleteCustomer(cpb.DeleteCustomerRequest(id=ann.id))
        assert await customers("ann", gone.consistency_token) == []
        assert await customers("example", gone.consistency_token) == ["Bob Jones"]


async def test_bad_queries_are_invalid_argument_with_a_field_violation(system: System) -> None:
    async with grpc.aio.insecure_channel(system.read) as channel:
        read = qpb_grpc.QueryServiceStub(channel)
        for query in ("", "  &|!():*<> ", "x" * 201, " ".join(["w"] * 17)):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await read.SearchProducts(qpb.SearchProductsRequest(query=query), timeout=10)
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert set(field_violations(caught.value)) == {"query"}
        for query in ("'; DROP TABLE read.customer_read_model; --", "a\\'b", "😀 ann", "Ωμέγα:*"):
            reply = await read.SearchCustomers(qpb.SearchCustomersRequest(query=query), timeout=10)
            assert list(reply.customers) == []
