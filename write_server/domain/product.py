"""The Product aggregate: catalogue data and stock."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

from write_server.domain import validation
from write_server.domain.aggregate import Aggregate
from write_server.domain.errors import FailedPrecondition, InsufficientStock
from write_server.domain.events import (
    ProductCreated,
    ProductDeleted,
    ProductStockReleased,
    ProductStockReserved,
    ProductUpdated,
)

PRODUCT_RULES: dict[str, validation.Rule] = {
    "name": validation.check_name,
    "description": validation.check_description,
    "price_cents": validation.check_price,
    "currency": validation.check_currency,
    "category": validation.check_text,
    "stock": validation.check_stock,
}


@dataclass(eq=False, kw_only=True)
class Product(Aggregate):
    kind: ClassVar[str] = "Product"
    name: str
    description: str
    price_cents: int
    currency: str
    category: str
    stock: int

    @classmethod
    def create(cls, *, id: str, now: datetime, **fields: Any) -> Product:
        """Validate ``fields`` (name, description, price_cents, currency, category, stock)."""
        validation.validate(fields, PRODUCT_RULES)
        product = cls(id=id, created_at=now, updated_at=now, **fields)
        product.record(ProductCreated, now, **fields)
        return product

    def update(self, changes: dict[str, Any], now: datetime) -> bool:
        """Apply the fields that differ; False (and no event) when nothing changes."""
        return self.change(changes, PRODUCT_RULES, ProductUpdated, now)

    def reserve(self, quantity: int, order_id: str, now: datetime) -> None:
        if quantity > self.stock:
            raise InsufficientStock(self.id, quantity, self.stock)
        self.stock -= quantity
        self.record(
            ProductStockReserved, now, order_id=order_id, quantity=quantity, stock=self.stock
        )

    def release(self, quantity: int, order_id: str, now: datetime) -> None:
        if self.stock + quantity > validation.MAX_STOCK:
            raise FailedPrecondition(
                f"returning {quantity} to product {self.id} would put its stock above "
                f"{validation.MAX_STOCK}; lower its stock first"
            )
        self.stock += quantity
        self.record(
            ProductStockReleased, now, order_id=order_id, quantity=quantity, stock=self.stock
        )

    def delete(self, now: datetime) -> None:
        self.deleted = True
        self.record(ProductDeleted, now)
