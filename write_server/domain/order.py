"""The Order aggregate and its lifecycle.

PENDING -> CONFIRMED -> SHIPPED -> DELIVERED; CANCELLED only from PENDING or
CONFIRMED (the service returns the reserved stock). An order can be deleted
only once it is finished (DELIVERED or CANCELLED), so deleting never strands
reserved stock.

Payments (only when the service runs with payments on): confirming requests a payment
(``PaymentRequested``, payment_status PENDING); the payments process manager reports
the provider's answer (:meth:`Order.record_payment`): CAPTURED or FAILED. Shipping then
requires CAPTURED. Cancelling a CAPTURED order requests its refund (``RefundRequested``);
so does a capture reported for an order cancelled while it was being charged. A result
reported twice is a no-op (the process manager retries after a crash).
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
    PaymentCaptured,
    PaymentFailed,
    PaymentRefunded,
    PaymentRequested,
    RefundRequested,
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

UNPAID, CAPTURED, FAILED, REFUNDED = "UNPAID", "CAPTURED", "FAILED", "REFUNDED"
CAPTURE, FAIL, REFUND = "captured", "failed", "refunded"  # what record_payment reports
MAX_REASON = 500

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
    payment_status: str = UNPAID
    payment_charge_id: str = ""  # the provider's charge, once captured

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

    def transition(self, action: str, now: datetime, *, payments: bool = False) -> None:
        """``confirm``, ``ship``, ``deliver`` or ``cancel``; with ``payments`` on, confirming
        requests the payment and shipping requires it captured."""
        allowed, target, event = _TRANSITIONS[action]
        if self.status not in allowed:
            raise IllegalTransition(self.id, self.status, action)
        if action == "ship" and payments and self.payment_status != CAPTURED:
            raise FailedPrecondition(
                f"order {self.id} is not paid (payment_status {self.payment_status}): it ships "
                "once its payment is CAPTURED"
            )
        self.status = target
        self.record(event, now)
        if action == "confirm" and payments:
            self.payment_status = PENDING
            self.record(
                PaymentRequested, now, amount_cents=self.total_cents, currency=self.currency,
                attempt=1,
            )  # fmt: skip
        elif action == "cancel" and self.payment_status == CAPTURED:
            self._request_refund(now)

    def record_payment(
        self,
        outcome: str,
        now: datetime,
        *,
        charge_id: str = "",
        refund_id: str = "",
        amount_cents: int = 0,
        currency: str = "",
        reason: str = "",
        retryable: bool = False,
    ) -> None:
        """What the provider did with this order's payment (``captured``, ``failed`` or
        ``refunded``). Reporting the state the order is already in is a no-op."""
        if outcome == CAPTURE:
            if self.payment_status == CAPTURED and self.payment_charge_id == charge_id:
                return
            self._require_payment(PENDING, outcome)
            if (amount_cents, currency) != (self.total_cents, self.currency):
                raise FailedPrecondition(
                    f"order {self.id} costs {self.total_cents} {self.currency}: a capture of "
                    f"{amount_cents} {currency} does not pay it"
                )
            self.payment_status, self.payment_charge_id = CAPTURED, charge_id
            self.record(
                PaymentCaptured, now, provider_charge_id=charge_id, amount_cents=amount_cents,
                currency=currency,
            )  # fmt: skip
            if self.status == CANCELLED:  # cancelled while it was being charged
                self._request_refund(now)
        elif outcome == FAIL:
            if self.payment_status == FAILED:
                return
            self._require_payment(PENDING, outcome)
            self.payment_status = FAILED
            self.record(PaymentFailed, now, reason=reason[:MAX_REASON], retryable=retryable)
        else:
            assert outcome == REFUND
            if self.payment_status == REFUNDED:
                return
            self._require_payment(CAPTURED, outcome)
            if self.status != CANCELLED:
                raise FailedPrecondition(f"order {self.id} is {self.status}: no refund requested")
            self.payment_status = REFUNDED
            self.record(
                PaymentRefunded, now, provider_refund_id=refund_id, amount_cents=amount_cents
            )

    def _request_refund(self, now: datetime) -> None:
        self.record(
            RefundRequested, now, provider_charge_id=self.payment_charge_id,
            amount_cents=self.total_cents,
        )  # fmt: skip

    def _require_payment(self, expected: str, outcome: str) -> None:
        if self.payment_status != expected:
            raise FailedPrecondition(
                f"order {self.id}'s payment is {self.payment_status}: it cannot be {outcome}"
            )

    def delete(self, now: datetime) -> None:
        if self.status not in (DELIVERED, CANCELLED):
            raise FailedPrecondition(
                f"order {self.id} is {self.status}: only DELIVERED or CANCELLED orders can be "
                "deleted (cancel it first)"
            )
        self.deleted = True
        self.record(OrderDeleted, now)
