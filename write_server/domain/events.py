"""Domain events (past tense). Field names are the payload contract in common/events.py."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar

from common import events as contract


@dataclass(frozen=True, kw_only=True)
class DomainEvent:
    """Recorded by an aggregate; persisted with the aggregate in one transaction."""

    aggregate_type: ClassVar[str]
    aggregate_id: str
    version: int  # the aggregate's version after this event
    occurred_at: datetime

    @property
    def event_type(self) -> str:
        return type(self).__name__

    @property
    def schema_version(self) -> int:
        """The payload schema this event is written with (stored on its row)."""
        return contract.SCHEMA_VERSIONS[self.event_type]

    def payload(self) -> dict[str, Any]:
        base = {"aggregate_id", "version", "occurred_at"}
        return {
            f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in base
        }


@dataclass(frozen=True, kw_only=True)
class ProductEvent(DomainEvent):
    aggregate_type: ClassVar[str] = contract.PRODUCT


@dataclass(frozen=True, kw_only=True)
class ProductCreated(ProductEvent):
    name: str
    description: str
    price_cents: int
    currency: str
    category: str
    stock: int


@dataclass(frozen=True, kw_only=True)
class ProductUpdated(ProductEvent):
    changes: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class ProductStockReserved(ProductEvent):
    order_id: str
    quantity: int
    stock: int


@dataclass(frozen=True, kw_only=True)
class ProductStockReleased(ProductEvent):
    order_id: str
    quantity: int
    stock: int


@dataclass(frozen=True, kw_only=True)
class ProductDeleted(ProductEvent):
    pass


@dataclass(frozen=True, kw_only=True)
class CustomerEvent(DomainEvent):
    aggregate_type: ClassVar[str] = contract.CUSTOMER


@dataclass(frozen=True, kw_only=True)
class CustomerCreated(CustomerEvent):
    name: str
    email: str
    address: str
    city: str
    postal_code: str
    country: str


@dataclass(frozen=True, kw_only=True)
class CustomerUpdated(CustomerEvent):
    changes: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class CustomerDeleted(CustomerEvent):
    pass


@dataclass(frozen=True, kw_only=True)
class OrderEvent(DomainEvent):
    aggregate_type: ClassVar[str] = contract.ORDER


@dataclass(frozen=True, kw_only=True)
class OrderPlaced(OrderEvent):
    """Schema v2: the customer as one object ``{id, name, email}``."""

    order_number: str
    customer: dict[str, str]
    items: list[dict[str, Any]]
    total_cents: int
    currency: str
    status: str


@dataclass(frozen=True, kw_only=True)
class OrderConfirmed(OrderEvent):
    status: str = "CONFIRMED"


@dataclass(frozen=True, kw_only=True)
class OrderShipped(OrderEvent):
    status: str = "SHIPPED"


@dataclass(frozen=True, kw_only=True)
class OrderDelivered(OrderEvent):
    status: str = "DELIVERED"


@dataclass(frozen=True, kw_only=True)
class OrderCancelled(OrderEvent):
    status: str = "CANCELLED"


@dataclass(frozen=True, kw_only=True)
class OrderDeleted(OrderEvent):
    pass


@dataclass(frozen=True, kw_only=True)
class PaymentRequested(OrderEvent):
    """Confirmed with payments on: the payments process manager charges the order."""

    amount_cents: int
    currency: str
    attempt: int  # part of the provider's idempotency key: a retry never charges twice


@dataclass(frozen=True, kw_only=True)
class PaymentCaptured(OrderEvent):
    provider_charge_id: str
    amount_cents: int
    currency: str


@dataclass(frozen=True, kw_only=True)
class PaymentFailed(OrderEvent):
    reason: str
    retryable: bool


@dataclass(frozen=True, kw_only=True)
class RefundRequested(OrderEvent):
    """A captured order was cancelled: the payments process manager refunds it."""

    provider_charge_id: str
    amount_cents: int


@dataclass(frozen=True, kw_only=True)
class PaymentRefunded(OrderEvent):
    provider_refund_id: str
    amount_cents: int


@dataclass(frozen=True, kw_only=True)
class WebhookEvent(DomainEvent):
    aggregate_type: ClassVar[str] = contract.WEBHOOK_SUBSCRIPTION


@dataclass(frozen=True, kw_only=True)
class WebhookSubscriptionCreated(WebhookEvent):
    url: str
    event_types: list[str]
    description: str


@dataclass(frozen=True, kw_only=True)
class WebhookSubscriptionDisabled(WebhookEvent):
    pass


@dataclass(frozen=True, kw_only=True)
class WebhookSecretRotated(WebhookEvent):
    """The secret changed; the event never carries it (the log is read by many)."""
