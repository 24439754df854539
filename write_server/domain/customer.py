"""The Customer aggregate. Emails are stored trimmed and lower-cased."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

from write_server.domain import validation
from write_server.domain.aggregate import Aggregate
from write_server.domain.events import CustomerCreated, CustomerDeleted, CustomerUpdated

CUSTOMER_RULES: dict[str, validation.Rule] = {
    "name": validation.check_name,
    "email": validation.check_email,
    "address": validation.check_text,
    "city": validation.check_text,
    "postal_code": validation.check_text,
    "country": validation.check_text,
}


def normalize_email(email: str) -> str:
    return email.strip().lower()


@dataclass(eq=False, kw_only=True)
class Customer(Aggregate):
    kind: ClassVar[str] = "Customer"
    name: str
    email: str
    address: str
    city: str
    postal_code: str
    country: str

    @classmethod
    def create(cls, *, id: str, now: datetime, **fields: Any) -> Customer:
        """Validate ``fields`` (name, email, address, city, postal_code, country)."""
        fields = {**fields, "email": normalize_email(fields["email"])}
        validation.validate(fields, CUSTOMER_RULES)
        customer = cls(id=id, created_at=now, updated_at=now, **fields)
        customer.record(CustomerCreated, now, **fields)
        return customer

    def update(self, changes: dict[str, Any], now: datetime) -> bool:
        """Apply the fields that differ; False (and no event) when nothing changes."""
        if "email" in changes:
            changes = {**changes, "email": normalize_email(changes["email"])}
        return self.change(changes, CUSTOMER_RULES, CustomerUpdated, now)

    def delete(self, now: datetime) -> None:
        self.deleted = True
        self.record(CustomerDeleted, now)
