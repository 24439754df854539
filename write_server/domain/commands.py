"""Commands (imperative verbs): what a client asks the write side to do.

``request_id`` is the optional idempotency key; ``expected_version`` 0 means
"don't check". Update commands carry only the fields to change.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True, kw_only=True)
class Command:
    request_id: str = ""

    def fingerprint(self) -> str:
        """Hash of the command's name and arguments (not the request id), for idempotency."""
        body = {k: v for k, v in asdict(self).items() if k != "request_id"}
        raw = json.dumps([type(self).__name__, body], sort_keys=True, default=str)
        return hashlib.sha256(raw.encode()).hexdigest()


@dataclass(frozen=True, kw_only=True)
class CreateProduct(Command):
    name: str
    description: str = ""
    price_cents: int
    currency: str
    category: str = ""
    stock: int = 0


@dataclass(frozen=True, kw_only=True)
class UpdateProduct(Command):
    id: str
    changes: dict[str, Any] = field(default_factory=dict)
    expected_version: int = 0


@dataclass(frozen=True, kw_only=True)
class DeleteProduct(Command):
    id: str
    expected_version: int = 0


@dataclass(frozen=True, kw_only=True)
class CreateCustomer(Command):
    name: str
    email: str
    address: str = ""
    city: str = ""
    postal_code: str = ""
    country: str = ""


@dataclass(frozen=True, kw_only=True)
class UpdateCustomer(Command):
    id: str
    changes: dict[str, Any] = field(default_factory=dict)
    expected_version: int = 0


@dataclass(frozen=True, kw_only=True)
class DeleteCustomer(Command):
    id: str
    expected_version: int = 0


@dataclass(frozen=True, slots=True)
class OrderItemRequest:
    product_id: str
    quantity: int


@dataclass(frozen=True, kw_only=True)
class PlaceOrder(Command):
    customer_id: str
    items: tuple[OrderItemRequest, ...]


@dataclass(frozen=True, kw_only=True)
class ChangeOrderStatus(Command):
    """ConfirmOrder, ShipOrder, DeliverOrder and CancelOrder differ only in ``action``."""

    id: str
    action: str  # confirm | ship | deliver | cancel
    expected_version: int = 0


@dataclass(frozen=True, kw_only=True)
class DeleteOrder(Command):
    id: str
    expected_version: int = 0


@dataclass(frozen=True, kw_only=True)
class CreateWebhookSubscription(Command):
    url: str
    event_types: tuple[str, ...] = ()
    description: str = ""


@dataclass(frozen=True, kw_only=True)
class DisableWebhookSubscription(Command):
    id: str
    expected_version: int = 0


@dataclass(frozen=True, kw_only=True)
class RotateWebhookSecret(Command):
    id: str
    expected_version: int = 0


@dataclass(frozen=True, kw_only=True)
class RecordPaymentResult(Command):
    """Internal (the payments process manager): what the provider did with an order's
    payment. ``outcome`` is ``captured``, ``failed`` or ``refunded``."""

    order_id: str
    outcome: str
    provider_charge_id: str = ""
    provider_refund_id: str = ""
    amount_cents: int = 0
    currency: str = ""
    reason: str = ""
    retryable: bool = False
