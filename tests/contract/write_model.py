"""One contract for both write-model adapters (in-memory and PostgreSQL).

Subclasses provide ``service`` (a CommandService over the adapter) and
``events_of(aggregate_id)`` (event types in order); every test here must pass
unchanged against both.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from common.errors import (
    AlreadyExists,
    ConcurrencyConflict,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
)
from common.positions import decode_token
from write_server.domain import commands
from write_server.service_layer.service import CommandService, RequestMeta

ALICE, MALLORY = RequestMeta(auth_subject="alice"), RequestMeta(auth_subject="mallory")


def product(**overrides: Any) -> commands.CreateProduct:
    values: dict[str, Any] = {
        "name": "Mug",
        "description": "Blue",
        "price_cents": 1250,
        "currency": "EUR",
        "category": "kitchen",
        "stock": 10,
    }
    values.update(overrides)
    return commands.CreateProduct(**values)


def customer(email: str = "ann@example.org", **overrides: Any) -> commands.CreateCustomer:
    return commands.CreateCustomer(name="Ann", email=email, city="Glasgow", **overrides)


class WriteModelContract:
    service: CommandService

    async def events_of(self, aggregate_id: str) -> list[str]:
        raise NotImplementedError

    async def stock_of(self, product_id: str) -> int:
        raise NotImplementedError

    async def stored_replies(self) -> list[str]:
        """Every stored command reply, as the adapter keeps it (text)."""
        raise NotImplementedError

    async def test_create_returns_id_version_and_token(self) -> None:
        result = await self.service.execute(product())
        assert result.version == 1
        assert decode_token(result.consistency_token) is not None
        assert await self.events_of(result.id) == ["ProductCreated"]

    async def test_tokens_increase_with_each_command(self) -> None:
        first = await self.service.execute(product())
        second = await self.service.execute(product(name="Plate"))
        one, two = decode_token(first.consistency_token), decode_token(second.consistency_token)
        assert one is not None and two is not None and two > one

    async def test_update_unknown_product_is_not_found(self) -> None:
        with pytest.raises(NotFound):
            await self.service.execute(
                commands.UpdateProduct(
                    id="01a1ffba-0000-7000-8000-000000000000", changes={"name": "x"}
                )
            )

    async def test_stale_expected_version_is_a_conflict_and_changes_nothing(self) -> None:
        created = await self.service.execute(product())
        await self.service.execute(commands.UpdateProduct(id=created.id, changes={"stock": 3}))
        with pytest.raises(ConcurrencyConflict):
            await self.service.execute(
                commands.UpdateProduct(id=created.id, changes={"stock": 4}, expected_version=1)
            )
        assert await self.stock_of(created.id) == 3
        assert await self.events_of(created.id) == ["ProductCreated", "ProductUpdated"]

    async def test_concurrent_writers_with_same_expected_version_one_wins(self) -> None:
        created = await self.service.execute(product())
        results = await asyncio.gather(
            *(
                self.service.execute(
                    commands.UpdateProduct(id=created.id, changes={"stock": n}, expected_version=1)
                )
                for n in (1, 2)
            ),
            return_exceptions=True,
        )
        assert sorted(type(r).__name__ for r in results) == ["CommandResult", "StaleVersion"]
        assert await self.events_of(created.id) == ["ProductCreated", "ProductUpdated"]

    async def test_duplicate_email_already_exists(self) -> None:
        await self.service.execute(customer())
        with pytest.raises(AlreadyExists):
            await self.service.execute(customer(email="ANN@example.org"))

    async def test_email_of_deleted_customer_can_be_reused(self) -> None:
        first = await self.service.execute(customer())
        await self.service.execute(commands.DeleteCustomer(id=first.id))
        again = await self.service.execute(customer())
        assert again.id != first.id

    async def test_update_to_taken_email_already_exists(self) -> None:
        await self.service.execute(customer())
        bob = await self.service.execute(customer(email="bob@example.org"))
        with pytest.raises(AlreadyExists):
            await self.service.execute(
                commands.UpdateCustomer(id=bob.id, changes={"email": "ann@example.org"})
            )

    async def test_place_order_reserves_stock_and_cancel_returns_it(self) -> None:
        p = await self.service.execute(product(stock=5))
        cu = await self.service.execute(customer())
        order = await self.service.execute(
            commands.PlaceOrder(customer_id=cu.id, items=(commands.OrderItemRequest(p.id, 3),))
        )
        assert await self.stock_of(p.id) == 2
        await self.service.execute(commands.ChangeOrderStatus(id=order.id, action="cancel"))
        assert await self.stock_of(p.id) == 5
        assert await self.events_of(p.id) == [
            "ProductCreated",
            "ProductStockReserved",
            "ProductStockReleased",
        ]
        assert await self.events_of(order.id) == ["OrderPlaced", "OrderCancelled"]

    async def test_not_enough_stock_changes_nothing(self) -> None:
        p = await self.service.execute(product(stock=1))
        cu = await self.service.execute(customer())
        with pytest.raises(FailedPrecondition):
            await self.service.execute(
                commands.PlaceOrder(customer_id=cu.id, items=(commands.OrderItemRequest(p.id, 2),))
            )
        assert await self.stock_of(p.id) == 1
        assert await self.events_of(p.id) == ["ProductCreated"]

    async def test_order_for_deleted_product_or_customer_is_not_found(self) -> None:
        p = await self.service.execute(product())
        cu = await self.service.execute(customer())
        await self.service.execute(commands.DeleteProduct(id=p.id))
        with pytest.raises(NotFound):
            await self.service.execute(
                commands.PlaceOrder(customer_id=cu.id, items=(commands.OrderItemRequest(p.id, 1),))
            )
        p2 = await self.service.execute(product())
        await self.service.execute(commands.DeleteCustomer(id=cu.id))
        with pytest.raises(NotFound):
            await self.service.execute(
                commands.PlaceOrder(customer_id=cu.id, items=(commands.OrderItemRequest(p2.id, 1),))
            )

    async def test_deleting_a_product_keeps_its_orders_working(self) -> None:
        p = await self.service.execute(product(stock=5))
        cu = await self.service.execute(customer())
        order = await self.service.execute(
            commands.PlaceOrder(customer_id=cu.id, items=(commands.OrderItemRequest(p.id, 2),))
        )
        await self.service.execute(commands.DeleteProduct(id=p.id))
        cancelled = await self.service.execute(
            commands.ChangeOrderStatus(id=order.id, action="cancel")
        )
        assert cancelled.version == 2
        await self.service.execute(commands.DeleteOrder(id=order.id))

    async def test_idempotent_retry_returns_first_reply(self) -> None:
        command = product(request_id="req-1")
        first = await self.service.execute(command)
        again = await self.service.execute(command)
        assert again == first
        assert await self.events_of(first.id) == ["ProductCreated"]

    async def test_concurrent_retries_execute_once(self) -> None:
        command = product(request_id="req-2")
        results = await asyncio.gather(*(self.service.execute(command) for _ in range(5)))
        assert len({r.id for r in results}) == 1

    async def test_request_id_reused_with_other_payload_is_rejected(self) -> None:
        await self.service.execute(product(request_id="req-3"))
        with pytest.raises(InvalidArgument) as info:
            await self.service.execute(product(name="Other", request_id="req-3"))
        assert info.value.violations[0].field == "request_id"

    async def test_failed_command_with_request_id_can_be_retried(self) -> None:
        cu = await self.service.execute(customer())
        p = await self.service.execute(product(stock=1))
        order = commands.PlaceOrder(
            customer_id=cu.id, items=(commands.OrderItemRequest(p.id, 2),), request_id="req-4"
        )
        with pytest.raises(FailedPrecondition):
            await self.service.execute(order)
        await self.service.execute(commands.UpdateProduct(id=p.id, changes={"stock": 2}))
        placed = await self.service.execute(order)
        assert placed.version == 1

    async def test_concurrent_orders_never_oversell(self) -> None:
        p = await self.service.execute(product(stock=5))
        cu = await self.service.execute(customer())
        results = await asyncio.gather(
            *(
                self.service.execute(
                    commands.PlaceOrder(
                        customer_id=cu.id, items=(commands.OrderItemRequest(p.id, 1),)
                    )
                )
                for _ in range(12)
            ),
            return_exceptions=True,
        )
        ok = [r for r in results if not isinstance(r, BaseException)]
        failed = [r for r in results if isinstance(r, BaseException)]
        assert len(ok) == 5
        assert all(isinstance(f, FailedPrecondition) for f in failed)
        assert await self.stock_of(p.id) == 0
        assert (await self.events_of(p.id)).count("ProductStockReserved") == 5

    async def test_request_ids_are_scoped_by_subject(self) -> None:
        command = product(request_id="shared-id")
        alices = await self.service.execute(command, ALICE)
        # Another caller's use of the id is a new command, not a replay of alice's.
        mallorys = await self.service.execute(command, MALLORY)
        assert mallorys.id != alices.id
        assert await self.service.execute(command, ALICE) == alices
        assert await self.service.execute(command, MALLORY) == mallorys
        assert await self.service.execute(command) not in (alices, mallorys)  # subject ""
        assert await self.events_of(alices.id) == ["ProductCreated"]

    async def test_concurrent_retries_of_two_subjects_execute_once_each(self) -> None:
        command = product(request_id="req-5")
        results = await asyncio.gather(
            *(self.service.execute(command, meta) for meta in (ALICE, MALLORY) * 3)
        )
        assert len({r.id for r in results}) == 2
        assert {r.id for r in results[0::2]} == {results[0].id}

    async def test_a_webhook_secret_is_replayed_only_to_its_subject_while_current(self) -> None:
        create = commands.CreateWebhookSubscription(
            url="https://hooks.example.com/in", request_id="hook-1"
        )
        first = await self.service.execute(create, ALICE)
        assert first.secret.startswith("whsec_")
        assert await self.service.execute(create, ALICE) == first
        # Mallory "replaying" alice's request id gets a subscription and secret of its own.
        other = await self.service.execute(create, MALLORY)
        assert other.id != first.id and other.secret not in ("", first.secret)

        rotate = commands.RotateWebhookSecret(id=first.id, expected_version=1, request_id="rot-1")
        rotated = await self.service.execute(rotate, ALICE)
        assert rotated.secret not in ("", first.secret)
        assert await self.service.execute(rotate, ALICE) == rotated
        with pytest.raises(ConcurrencyConflict):  # mallory's "replay" is a stale rotation
            await self.service.execute(rotate, MALLORY)
        with pytest.raises(FailedPrecondition) as replaced:
            await self.service.execute(create, ALICE)
        assert "replaced by a later rotation" in str(replaced.value)
        assert "not shown again" in str(replaced.value)
        # Disabling keeps the secret: the rotation's retry still answers it.
        await self.service.execute(commands.DisableWebhookSubscription(id=first.id), ALICE)
        assert await self.service.execute(rotate, ALICE) == rotated

    async def test_stored_replies_hold_no_secret(self) -> None:
        create = commands.CreateWebhookSubscription(
            url="https://hooks.example.com/in", request_id="hook-2"
        )
        created = await self.service.execute(create, ALICE)
        rotated = await self.service.execute(
            commands.RotateWebhookSecret(id=created.id, expected_version=1, request_id="rot-2"),
            ALICE,
        )
        stored = "\n".join(await self.stored_replies())
        assert created.id in stored and "whsec_" not in stored
        for secret in (created.secret, rotated.secret):
            assert secret.removeprefix("whsec_") not in stored
