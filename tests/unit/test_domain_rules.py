"""Domain rules on the in-memory adapter: validation, lifecycle, money."""

from __future__ import annotations

import pytest

from common.errors import FailedPrecondition, InvalidArgument
from tests.contract.write_model import customer, product
from write_server.adapters.memory import InMemoryStore, InMemoryUnitOfWork
from write_server.domain import commands
from write_server.service_layer.service import CommandService


@pytest.fixture
def store() -> InMemoryStore:
    return InMemoryStore()


@pytest.fixture
def service(store: InMemoryStore) -> CommandService:
    return CommandService(lambda: InMemoryUnitOfWork(store))


def fields(exc: InvalidArgument) -> set[str]:
    return {v.field for v in exc.violations}


async def test_every_bad_product_field_is_reported_at_once(service: CommandService) -> None:
    with pytest.raises(InvalidArgument) as info:
        await service.execute(product(name=" ", price_cents=-1, currency="eur", stock=-2))
    assert fields(info.value) == {"name", "price_cents", "currency", "stock"}


async def test_bad_email_and_empty_name(service: CommandService) -> None:
    with pytest.raises(InvalidArgument) as info:
        await service.execute(commands.CreateCustomer(name="", email="not-an-email"))
    assert fields(info.value) == {"name", "email"}


async def test_email_is_normalised(service: CommandService, store: InMemoryStore) -> None:
    created = await service.execute(customer(email="  Ann@Example.ORG "))
    assert store.customers[created.id].email == "ann@example.org"


async def test_ids_must_be_uuids(service: CommandService) -> None:
    with pytest.raises(InvalidArgument) as info:
        await service.execute(commands.DeleteProduct(id="42"))
    assert fields(info.value) == {"id"}


async def test_update_needs_a_field(service: CommandService) -> None:
    created = await service.execute(product())
    with pytest.raises(InvalidArgument):
        await service.execute(commands.UpdateProduct(id=created.id, changes={}))


async def test_update_to_same_values_records_nothing(
    service: CommandService, store: InMemoryStore
) -> None:
    created = await service.execute(product())
    result = await service.execute(commands.UpdateProduct(id=created.id, changes={"name": "Mug"}))
    assert result.version == 1
    assert result.consistency_token == ""
    assert len(store.events) == 1


async def test_order_items_are_validated(service: CommandService) -> None:
    cu = await service.execute(customer())
    p = await service.execute(product())
    items = (
        commands.OrderItemRequest(p.id, 1),
        commands.OrderItemRequest(p.id, 1),
        commands.OrderItemRequest("x", 1),
        commands.OrderItemRequest(p.id, 0),
    )
    with pytest.raises(InvalidArgument) as info:
        await service.execute(commands.PlaceOrder(customer_id=cu.id, items=items))
    assert fields(info.value) == {
        "items[1].product_id",
        "items[2].product_id",
        "items[3].product_id",
        "items[3].quantity",
    }
    with pytest.raises(InvalidArgument) as empty:
        await service.execute(commands.PlaceOrder(customer_id=cu.id, items=()))
    assert fields(empty.value) == {"items"}


async def test_order_takes_current_prices_and_one_currency(
    service: CommandService, store: InMemoryStore
) -> None:
    cu = await service.execute(customer())
    mug = await service.execute(product(price_cents=250))
    plate = await service.execute(product(name="Plate", price_cents=1000))
    order = await service.execute(
        commands.PlaceOrder(
            customer_id=cu.id,
            items=(commands.OrderItemRequest(mug.id, 2), commands.OrderItemRequest(plate.id, 3)),
        )
    )
    placed = store.orders[order.id]
    assert placed.total_cents == 2 * 250 + 3 * 1000
    assert placed.order_number.startswith("ORD-")
    dollars = await service.execute(product(currency="USD"))
    with pytest.raises(FailedPrecondition, match="one currency"):
        await service.execute(
            commands.PlaceOrder(
                customer_id=cu.id,
                items=(
                    commands.OrderItemRequest(mug.id, 1),
                    commands.OrderItemRequest(dollars.id, 1),
                ),
            )
        )


@pytest.mark.parametrize(
    ("path", "illegal"),
    [
        ([], "ship"),
        ([], "deliver"),
        (["confirm"], "confirm"),
        (["confirm", "ship"], "cancel"),
        (["confirm", "ship", "deliver"], "cancel"),
        (["cancel"], "confirm"),
    ],
)
async def test_illegal_transitions_fail(
    service: CommandService, path: list[str], illegal: str
) -> None:
    cu = await service.execute(customer())
    p = await service.execute(product())
    order = await service.execute(
        commands.PlaceOrder(customer_id=cu.id, items=(commands.OrderItemRequest(p.id, 1),))
    )
    for action in path:
        await service.execute(commands.ChangeOrderStatus(id=order.id, action=action))
    with pytest.raises(FailedPrecondition):
        await service.execute(commands.ChangeOrderStatus(id=order.id, action=illegal))


async def test_full_lifecycle_then_delete(service: CommandService, store: InMemoryStore) -> None:
    cu = await service.execute(customer())
    p = await service.execute(product())
    order = await service.execute(
        commands.PlaceOrder(customer_id=cu.id, items=(commands.OrderItemRequest(p.id, 1),))
    )
    with pytest.raises(FailedPrecondition, match="cancel it first"):
        await service.execute(commands.DeleteOrder(id=order.id))
    for action in ("confirm", "ship", "deliver"):
        await service.execute(commands.ChangeOrderStatus(id=order.id, action=action))
    deleted = await service.execute(commands.DeleteOrder(id=order.id, expected_version=4))
    assert deleted.version == 5
    assert store.orders[order.id].deleted
    assert store.products[p.id].stock == 9


async def test_stock_has_a_ceiling_and_a_cancel_never_breaks_it(
    service: CommandService, store: InMemoryStore
) -> None:
    """products.stock is 32-bit: no command may push it past 2**31 - 1 (found by fuzzing:
    a cancel that returned stock overflowed the column and answered INTERNAL)."""
    with pytest.raises(InvalidArgument) as info:
        await service.execute(product(stock=2**31))
    assert fields(info.value) == {"stock"}
    cu = await service.execute(customer())
    p = await service.execute(product(stock=10))
    order = await service.execute(
        commands.PlaceOrder(customer_id=cu.id, items=(commands.OrderItemRequest(p.id, 5),))
    )
    await service.execute(commands.UpdateProduct(id=p.id, changes={"stock": 2**31 - 1}))
    with pytest.raises(FailedPrecondition, match="lower its stock first"):
        await service.execute(commands.ChangeOrderStatus(id=order.id, action="cancel"))
    assert store.orders[order.id].status == "PENDING"
    assert store.products[p.id].stock == 2**31 - 1


async def test_an_order_total_must_fit_64_bits(service: CommandService) -> None:
    """Each line is bounded, their sum must be too (orders.total_cents is 64-bit)."""
    cu = await service.execute(customer())
    dear = [await service.execute(product(price_cents=10**13, stock=10_000)) for _ in range(93)]
    items = tuple(commands.OrderItemRequest(p.id, 10_000) for p in dear)
    with pytest.raises(FailedPrecondition, match="order fewer items"):
        await service.execute(commands.PlaceOrder(customer_id=cu.id, items=items))
    fits = await service.execute(commands.PlaceOrder(customer_id=cu.id, items=items[:92]))
    assert fits.version == 1
