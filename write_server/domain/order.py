"""The Order aggregate and its lifecycle.

PENDING -> CONFIRMED -> SHIPPED -> DELIVERED; CANCELLED only from PENDING or
CONFIRMED (the service returns the reserved stock). An order can be deleted
only once it is finished (DELIVERED or CANCELLED), so deleting never strands
reserved stock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import ClassVar

from common.events import ORDER_ITEM_FIELDS
from write_server.domain.aggregate import Aggregate
from write_server.domain.customer import Customer
from write_server.domain.errors import FailedPrecondition, IllegalTransition
from write_server.domain.events import (
    DomainEvent,
    OrderCancelled,
    OrderConfirmed,
    OrderDeleted,
    OrderDelivered,
    OrderPlaced,
    OrderShipped,
)
from write_server.domain.product import Product
from write_server.domain.validation import MAX_ORDER_TOTAL_CENTS

PENDING, CONFIRMED, SHIPPED, DELIVERED, CANCELLED = (
    "PENDING",
    "CONFIRMED",
    "SHIPPED",
    "DELIVERED",
    "CANCELLED",
)

# action -> (allowed from, resulting status, event)
_TRANSITIONS: dict[str, tuple[frozenset[str], str, type[DomainEvent]]] = {
    "confirm": (frozenset({PENDING}), CONFIRMED, OrderConfirmed),
    "ship": (frozenset({CONFIRMED}), SHIPPED, OrderShipped),
    "deliver": (frozenset({SHIPPED}), DELIVERED, OrderDelivered),
    "cancel": (frozenset({PENDING, CONFIRMED}), CANCELLED, OrderCancelled),
}


@dataclass(frozen=True, slots=True)
class OrderLine:
    product_id: str
    name: str
    quantity: int
    unit_price_cents: int

    @property
    def line_total_cents(self) -> int:
        return self.quantity * self.unit_price_cents

    def as_dict(self) -> dict[str, object]:
        """The line as OrderPlaced carries it (and as order_items stores it)."""
        return {f: getattr(self, f) for f in ORDER_ITEM_FIELDS}


@dataclass(eq=False, kw_only=True)
class Order(Aggregate):
    kind: ClassVar[str] = "Order"
    order_number: str
    customer_id: str
    currency: str
    status: str
    lines: list[OrderLine] = field(default_factory=list)

    @property
    def total_cents(self) -> int:
        return sum(line.line_total_cents for line in self.lines)

    @classmethod
    def place(
        cls,
        *,
        id: str,
        order_number: str,
        customer: Customer,
        items: list[tuple[Product, int]],
        now: datetime,
    ) -> Order:
        """Take each product's current name and price, reserve its stock, record OrderPlaced."""
        currencies = {product.currency for product, _ in items}
        if len(currencies) != 1:
            raise FailedPrecondition(
                f"an order has one currency; these products use {', '.join(sorted(currencies))}"
            )
        lines = [OrderLine(p.id, p.name, qty, p.price_cents) for p, qty in items]
        total = sum(line.line_total_cents for line in lines)
        if total > MAX_ORDER_TOTAL_CENTS:
            raise FailedPrecondition(
                f"the order's total ({total} cents) would exceed the maximum of "
                f"{MAX_ORDER_TOTAL_CENTS}; order fewer items"
            )
        order = cls(
            id=id,
            order_number=order_number,
            customer_id=customer.id,
            currency=currencies.pop(),
            status=PENDING,
            lines=lines,
            created_at=now,
            updated_at=now,
        )
        for product, quantity in items:
            product.reserve(quantity, id, now)
        order.record(
            OrderPlaced,
            now,
            order_number=order_number,
            customer={"id": customer.id, "name": customer.name, "email": customer.email},
            items=[line.as_dict() for line in lines],
            total_cents=order.total_cents,
            currency=order.currency,
            status=PENDING,
        )
        return order

    def transition(self, action: str, now: datetime) -> None:
        allowed, target, event = _TRANSITIONS[action]
        if self.status not in allowed:
            raise IllegalTransition(self.id, self.status, action)
        self.status = target
        self.record(event, now)

    def delete(self, now: datetime) -> None:
        if self.status not in (DELIVERED, CANCELLED):
            raise FailedPrecondition(
                f"order {self.id} is {self.status}: only DELIVERED or CANCELLED orders can be "
                "deleted (cancel it first)"
            )
        self.deleted = True
        self.record(OrderDeleted, now)
