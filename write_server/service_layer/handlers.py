"""Command handlers: lock what will change, load it, let the aggregates decide.

Each handler returns the aggregate the reply is about. Locks are taken before
any write (see UnitOfWork.lock); reads that decide *which* aggregates to lock
(e.g. an order's products on cancel) come first, then those locks.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from common.events import CUSTOMER_FIELDS, PRODUCT_FIELDS
from write_server.domain import commands
from write_server.domain.aggregate import Aggregate
from write_server.domain.customer import Customer
from write_server.domain.errors import FieldViolation, InvalidArgument, NotFound
from write_server.domain.order import CANCELLED, CAPTURE, FAIL, REFUND, Order
from write_server.domain.product import Product
from write_server.domain.validation import require_uuid, require_version
from write_server.domain.webhook import WebhookSubscription
from write_server.service_layer.ports import A, Repository, UnitOfWork

MAX_ORDER_ITEMS = 100
MAX_ITEM_QUANTITY = 10_000


@dataclass(frozen=True, slots=True)
class Context:
    """What a handler needs besides the command: the time and new ids."""

    now: datetime
    new_id: Callable[[], str]
    # CQRS_WEBHOOKS_ALLOW_PRIVATE: webhook URLs may name loopback/private addresses.
    allow_private_webhooks: bool = False
    # CQRS_PAYMENTS_URL set: confirming requests a payment, shipping requires it.
    payments: bool = False


async def create_product(cmd: commands.CreateProduct, uow: UnitOfWork, ctx: Context) -> Aggregate:
    product = Product.create(id=ctx.new_id(), now=ctx.now, **_fields(cmd, PRODUCT_FIELDS))
    uow.products.add(product)
    return product


async def update_product(cmd: commands.UpdateProduct, uow: UnitOfWork, ctx: Context) -> Aggregate:
    ident = _target(cmd.id, cmd.expected_version, cmd.changes)
    product = await _locked(uow, uow.products, ident, cmd.expected_version)
    product.update(cmd.changes, ctx.now)
    return product


async def delete_product(cmd: commands.DeleteProduct, uow: UnitOfWork, ctx: Context) -> Aggregate:
    ident = _target(cmd.id, cmd.expected_version)
    product = await _locked(uow, uow.products, ident, cmd.expected_version)
    product.delete(ctx.now)
    return product


async def create_customer(cmd: commands.CreateCustomer, uow: UnitOfWork, ctx: Context) -> Aggregate:
    customer = Customer.create(id=ctx.new_id(), now=ctx.now, **_fields(cmd, CUSTOMER_FIELDS))
    uow.customers.add(customer)
    return customer


async def update_customer(cmd: commands.UpdateCustomer, uow: UnitOfWork, ctx: Context) -> Aggregate:
    ident = _target(cmd.id, cmd.expected_version, cmd.changes)
    customer = await _locked(uow, uow.customers, ident, cmd.expected_version)
    customer.update(cmd.changes, ctx.now)
    return customer


async def delete_customer(cmd: commands.DeleteCustomer, uow: UnitOfWork, ctx: Context) -> Aggregate:
    ident = _target(cmd.id, cmd.expected_version)
    customer = await _locked(uow, uow.customers, ident, cmd.expected_version)
    customer.delete(ctx.now)
    return customer


async def place_order(cmd: commands.PlaceOrder, uow: UnitOfWork, ctx: Context) -> Aggregate:
    customer_id = require_uuid("customer_id", cmd.customer_id)
    quantities = _validate_items(cmd.items)
    await uow.lock([customer_id, *quantities])
    customer = await uow.customers.get(customer_id)
    products = await uow.products.get_many(quantities)
    for index, product_id in enumerate(quantities):
        if product_id not in products:
            raise NotFound(f"product {product_id} (items[{index}]) not found")
    order = Order.place(
        id=ctx.new_id(),
        order_number=await uow.orders.next_order_number(),
        customer=customer,
        items=[(products[pid], qty) for pid, qty in quantities.items()],
        now=ctx.now,
    )
    uow.orders.add(order)
    return order


async def change_order_status(
    cmd: commands.ChangeOrderStatus, uow: UnitOfWork, ctx: Context
) -> Aggregate:
    ident = _target(cmd.id, cmd.expected_version)
    order = await _locked(uow, uow.orders, ident, cmd.expected_version)
    order.transition(cmd.action, ctx.now, payments=ctx.payments)
    if order.status == CANCELLED:
        # Give the reserved stock back; a product deleted since keeps nothing.
        product_ids = [line.product_id for line in order.lines]
        await uow.lock(product_ids)
        products = await uow.products.get_many(product_ids)
        for line in order.lines:
            if line.product_id in products:
                products[line.product_id].release(line.quantity, order.id, ctx.now)
    return order


async def delete_order(cmd: commands.DeleteOrder, uow: UnitOfWork, ctx: Context) -> Aggregate:
    ident = _target(cmd.id, cmd.expected_version)
    order = await _locked(uow, uow.orders, ident, cmd.expected_version)
    order.delete(ctx.now)
    return order


MAX_PROVIDER_ID = 200
_OUTCOMES = (CAPTURE, FAIL, REFUND)


async def record_payment_result(
    cmd: commands.RecordPaymentResult, uow: UnitOfWork, ctx: Context
) -> Aggregate:
    ident = require_uuid("order_id", cmd.order_id)
    violations: list[FieldViolation] = []
    if cmd.outcome not in _OUTCOMES:
        violations.append(FieldViolation("outcome", "must be CAPTURED, FAILED or REFUNDED"))
    wanted = {CAPTURE: "provider_charge_id", REFUND: "provider_refund_id"}.get(cmd.outcome)
    for name in ("provider_charge_id", "provider_refund_id"):
        value = getattr(cmd, name)
        if len(value) > MAX_PROVIDER_ID:
            violations.append(FieldViolation(name, f"at most {MAX_PROVIDER_ID} characters"))
        elif name == wanted and not value.strip():
            violations.append(FieldViolation(name, f"is required for {cmd.outcome.upper()}"))
    if cmd.outcome in (CAPTURE, REFUND) and cmd.amount_cents <= 0:
        violations.append(FieldViolation("amount_cents", "must be positive"))
    if violations:
        raise InvalidArgument(violations)
    order = await _locked(uow, uow.orders, ident, 0)
    order.record_payment(
        cmd.outcome,
        ctx.now,
        charge_id=cmd.provider_charge_id,
        refund_id=cmd.provider_refund_id,
        amount_cents=cmd.amount_cents,
        currency=cmd.currency,
        reason=cmd.reason,
        retryable=cmd.retryable,
    )
    return order


async def create_webhook_subscription(
    cmd: commands.CreateWebhookSubscription, uow: UnitOfWork, ctx: Context
) -> Aggregate:
    subscription = WebhookSubscription.create(
        id=ctx.new_id(),
        now=ctx.now,
        url=cmd.url,
        event_types=list(cmd.event_types),
        description=cmd.description,
        allow_private=ctx.allow_private_webhooks,
    )
    uow.webhooks.add(subscription)
    return subscription


async def disable_webhook_subscription(
    cmd: commands.DisableWebhookSubscription, uow: UnitOfWork, ctx: Context
) -> Aggregate:
    ident = _target(cmd.id, cmd.expected_version)
    subscription = await _locked(uow, uow.webhooks, ident, cmd.expected_version)
    subscription.disable(ctx.now)
    return subscription


async def rotate_webhook_secret(
    cmd: commands.RotateWebhookSecret, uow: UnitOfWork, ctx: Context
) -> Aggregate:
    ident = _target(cmd.id, cmd.expected_version)
    subscription = await _locked(uow, uow.webhooks, ident, cmd.expected_version)
    subscription.rotate_secret(ctx.now)
    return subscription


async def _locked(uow: UnitOfWork, repo: Repository[A], ident: str, expected_version: int) -> A:
    """The aggregate ``ident``, locked for this unit of work and at ``expected_version``."""
    await uow.lock([ident])
    aggregate = await repo.get(ident)
    aggregate.check_version(expected_version)
    return aggregate


def _fields(cmd: commands.Command, fields: tuple[str, ...]) -> dict[str, Any]:
    return {f: getattr(cmd, f) for f in fields}


def _target(ident: str, expected_version: int, changes: dict[str, Any] | None = None) -> str:
    canonical = require_uuid("id", ident)
    require_version(expected_version)
    if changes is not None and not changes:
        raise InvalidArgument(FieldViolation("update", "set at least one field to change"))
    return canonical


def _validate_items(items: tuple[commands.OrderItemRequest, ...]) -> dict[str, int]:
    """product id -> quantity, in request order; every problem reported at once."""
    violations: list[FieldViolation] = []
    if not items:
        violations.append(FieldViolation("items", "must contain at least one item"))
    if len(items) > MAX_ORDER_ITEMS:
        violations.append(FieldViolation("items", f"at most {MAX_ORDER_ITEMS} items"))
    quantities: dict[str, int] = {}
    for index, item in enumerate(items):
        try:
            product_id = require_uuid(f"items[{index}].product_id", item.product_id)
        except InvalidArgument as exc:
            violations.extend(exc.violations)
            continue
        if product_id in quantities:
            violations.append(
                FieldViolation(f"items[{index}].product_id", "duplicate product in one order")
            )
        if not 1 <= item.quantity <= MAX_ITEM_QUANTITY:
            violations.append(
                FieldViolation(f"items[{index}].quantity", f"must be 1..{MAX_ITEM_QUANTITY}")
            )
        quantities[product_id] = item.quantity
    if violations:
        raise InvalidArgument(violations)
    return quantities


Handler = Callable[[Any, UnitOfWork, Context], Awaitable[Aggregate]]

HANDLERS: dict[type[commands.Command], Handler] = {
    commands.CreateProduct: create_product,
    commands.UpdateProduct: update_product,
    commands.DeleteProduct: delete_product,
    commands.CreateCustomer: create_customer,
    commands.UpdateCustomer: update_customer,
    commands.DeleteCustomer: delete_customer,
    commands.PlaceOrder: place_order,
    commands.ChangeOrderStatus: change_order_status,
    commands.DeleteOrder: delete_order,
    commands.RecordPaymentResult: record_payment_result,
    commands.CreateWebhookSubscription: create_webhook_subscription,
    commands.DisableWebhookSubscription: disable_webhook_subscription,
    commands.RotateWebhookSecret: rotate_webhook_secret,
}
