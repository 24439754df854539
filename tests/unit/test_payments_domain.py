"""Payment rules of the Order aggregate (in-memory adapter): what confirming, shipping,
cancelling and each reported result record, with payments on and off."""

from __future__ import annotations

import pytest

from common.errors import FailedPrecondition, InvalidArgument
from tests.contract.write_model import customer, product
from write_server.adapters.memory import InMemoryStore, InMemoryUnitOfWork
from write_server.domain import commands
from write_server.service_layer.service import CommandService


def service(store: InMemoryStore, *, payments: bool = True) -> CommandService:
    return CommandService(lambda: InMemoryUnitOfWork(store), payments=payments)


def events(store: InMemoryStore, order_id: str) -> list[str]:
    return [r.event.event_type for r in store.events if r.event.aggregate_id == order_id]


async def placed(svc: CommandService) -> str:
    c = await svc.execute(customer())
    p = await svc.execute(product(price_cents=1250, stock=5))
    items = (commands.OrderItemRequest(p.id, 2),)
    return (await svc.execute(commands.PlaceOrder(customer_id=c.id, items=items))).id


def status(order_id: str, action: str) -> commands.ChangeOrderStatus:
    return commands.ChangeOrderStatus(id=order_id, action=action)


def captured(order_id: str, charge: str = "ch_1", amount: int = 2500) -> commands.Command:
    return commands.RecordPaymentResult(
        order_id=order_id, outcome="captured", provider_charge_id=charge, amount_cents=amount,
        currency="EUR",
    )  # fmt: skip


async def test_without_payments_orders_ship_unpaid_as_before() -> None:
    store = InMemoryStore()
    svc = service(store, payments=False)
    order = await placed(svc)
    for action in ("confirm", "ship", "deliver"):
        await svc.execute(status(order, action))
    assert events(store, order) == [
        "OrderPlaced",
        "OrderConfirmed",
        "OrderShipped",
        "OrderDelivered",
    ]
    assert store.orders[order].payment_status == "UNPAID"


async def test_confirm_requests_the_payment_and_ship_waits_for_the_capture() -> None:
    store = InMemoryStore()
    svc = service(store)
    order = await placed(svc)
    await svc.execute(status(order, "confirm"))
    requested = store.events[-1].event
    assert requested.event_type == "PaymentRequested"
    assert requested.payload() == {"amount_cents": 2500, "currency": "EUR", "attempt": 1}
    assert store.orders[order].payment_status == "PENDING"
    with pytest.raises(FailedPrecondition, match="not paid"):
        await svc.execute(status(order, "ship"))
    await svc.execute(captured(order))
    assert store.orders[order].payment_status == "CAPTURED"
    assert store.events[-1].event.payload() == {
        "provider_charge_id": "ch_1", "amount_cents": 2500, "currency": "EUR",
    }  # fmt: skip
    await svc.execute(status(order, "ship"))
    assert events(store, order)[-3:] == ["PaymentRequested", "PaymentCaptured", "OrderShipped"]


async def test_a_result_reported_twice_records_once() -> None:
    store = InMemoryStore()
    svc = service(store)
    order = await placed(svc)
    await svc.execute(status(order, "confirm"))
    await svc.execute(captured(order))
    again = await svc.execute(captured(order))  # the process manager after a crash
    assert events(store, order).count("PaymentCaptured") == 1
    assert again.consistency_token == ""  # nothing was written
    with pytest.raises(FailedPrecondition):  # a different charge is not the same result
        await svc.execute(captured(order, charge="ch_2"))


async def test_a_capture_must_pay_the_order_exactly() -> None:
    store = InMemoryStore()
    svc = service(store)
    order = await placed(svc)
    await svc.execute(status(order, "confirm"))
    with pytest.raises(FailedPrecondition, match="does not pay it"):
        await svc.execute(captured(order, amount=2499))


async def test_decline_records_payment_failed_and_the_order_cannot_ship() -> None:
    store = InMemoryStore()
    svc = service(store)
    order = await placed(svc)
    await svc.execute(status(order, "confirm"))
    failed = commands.RecordPaymentResult(
        order_id=order, outcome="failed", reason="card_declined: Your card was declined."
    )
    await svc.execute(failed)
    await svc.execute(failed)
    assert events(store, order).count("PaymentFailed") == 1
    assert store.events[-1].event.payload() == {
        "reason": "card_declined: Your card was declined.", "retryable": False,
    }  # fmt: skip
    with pytest.raises(FailedPrecondition):
        await svc.execute(status(order, "ship"))
    with pytest.raises(FailedPrecondition):  # a late capture after a definitive failure
        await svc.execute(captured(order))


async def test_cancel_after_capture_requests_a_refund_then_refunded() -> None:
    store = InMemoryStore()
    svc = service(store)
    order = await placed(svc)
    await svc.execute(status(order, "confirm"))
    await svc.execute(captured(order, charge="ch_9"))
    await svc.execute(status(order, "cancel"))
    assert events(store, order)[-2:] == ["OrderCancelled", "RefundRequested"]
    assert store.events[-1].event.payload() == {"provider_charge_id": "ch_9", "amount_cents": 2500}
    assert store.orders[order].payment_status == "CAPTURED"  # until the money is back
    refunded = commands.RecordPaymentResult(
        order_id=order, outcome="refunded", provider_refund_id="re_1", amount_cents=2500
    )
    await svc.execute(refunded)
    await svc.execute(refunded)
    assert events(store, order)[-1] == "PaymentRefunded"
    assert events(store, order).count("PaymentRefunded") == 1
    assert store.orders[order].payment_status == "REFUNDED"


async def test_a_capture_for_an_order_cancelled_meanwhile_is_refunded() -> None:
    store = InMemoryStore()
    svc = service(store)
    order = await placed(svc)
    await svc.execute(status(order, "confirm"))
    await svc.execute(status(order, "cancel"))  # while the charge is in flight
    await svc.execute(captured(order))
    assert events(store, order)[-3:] == ["OrderCancelled", "PaymentCaptured", "RefundRequested"]


async def test_bad_results_are_invalid_arguments_naming_every_field() -> None:
    store = InMemoryStore()
    svc = service(store)
    with pytest.raises(InvalidArgument) as info:
        await svc.execute(
            commands.RecordPaymentResult(order_id="01a233c8-f3b2-78d7-bf31-86940c60d1a6",
                                         outcome="captured", provider_charge_id=" ",
                                         provider_refund_id="r" * 201, amount_cents=0)
        )  # fmt: skip
    assert {v.field for v in info.value.violations} == {
        "provider_charge_id", "provider_refund_id", "amount_cents",
    }  # fmt: skip
    with pytest.raises(InvalidArgument):
        await svc.execute(commands.RecordPaymentResult(order_id="x", outcome="captured"))
    with pytest.raises(InvalidArgument):
        await svc.execute(commands.RecordPaymentResult(order_id=await placed(svc), outcome="paid"))
