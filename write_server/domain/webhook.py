"""The WebhookSubscription aggregate: where to deliver which events, and the secret
that signs them (Standard Webhooks). The secret is state, never an event field."""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass, field
from datetime import datetime
from typing import ClassVar

from common.events import SUBSCRIBABLE_EVENT_TYPES
from common.webhook_urls import url_problem
from write_server.domain import validation
from write_server.domain.aggregate import Aggregate
from write_server.domain.errors import FailedPrecondition, FieldViolation, InvalidArgument
from write_server.domain.events import (
    WebhookSecretRotated,
    WebhookSubscriptionCreated,
    WebhookSubscriptionDisabled,
)

ACTIVE, DISABLED = "ACTIVE", "DISABLED"
MAX_EVENT_TYPES = len(SUBSCRIBABLE_EVENT_TYPES)
SECRET_PREFIX = "whsec_"


def new_secret() -> str:
    """A Standard Webhooks secret: ``whsec_`` + base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def _check_event_types(event_types: list[str]) -> list[FieldViolation]:
    problems: list[FieldViolation] = []
    seen: set[str] = set()
    for index, name in enumerate(event_types):
        if name not in SUBSCRIBABLE_EVENT_TYPES:
            problems.append(
                FieldViolation(
                    f"event_types[{index}]",
                    f"unknown event type {name[:60]!r}; expected one of "
                    + ", ".join(SUBSCRIBABLE_EVENT_TYPES),
                )
            )
        elif name in seen:
            problems.append(FieldViolation(f"event_types[{index}]", "listed twice"))
        seen.add(name)
    return problems


@dataclass(eq=False, kw_only=True)
class WebhookSubscription(Aggregate):
    kind: ClassVar[str] = "WebhookSubscription"
    url: str
    event_types: list[str]
    description: str
    secret: str
    # The secret before the last rotation: the dispatcher signs with both for a grace
    # period after ``rotated_at``, so receivers can switch without dropping a delivery.
    previous_secret: str = field(default="", repr=False)
    rotated_at: datetime | None = None
    status: str = ACTIVE
    # The secret made by this command, for the reply only (never stored twice, never logged).
    revealed_secret: str = field(default="", repr=False)

    @classmethod
    def create(
        cls,
        *,
        id: str,
        now: datetime,
        url: str,
        event_types: list[str],
        description: str,
        allow_private: bool,
    ) -> WebhookSubscription:
        """Validate every field at once; the new subscription is ACTIVE with a new secret."""
        violations = _check_event_types(event_types)
        problem = url_problem(url, allow_private=allow_private)
        if problem is not None:
            violations.insert(0, FieldViolation("url", problem))
        described = validation.check_description(description)
        if described is not None:
            violations.append(FieldViolation("description", described))
        if violations:
            raise InvalidArgument(violations)
        secret = new_secret()
        sub = cls(
            id=id,
            created_at=now,
            updated_at=now,
            url=url,
            event_types=list(event_types),
            description=description,
            secret=secret,
            revealed_secret=secret,
        )
        sub.record(
            WebhookSubscriptionCreated,
            now,
            url=url,
            event_types=list(event_types),
            description=description,
        )
        return sub

    def disable(self, now: datetime) -> None:
        self._require_active("disable it")
        self.status = DISABLED
        self.record(WebhookSubscriptionDisabled, now)

    def rotate_secret(self, now: datetime) -> None:
        """A new secret from now on; the old one keeps signing beside it for the grace
        period (``CQRS_WEBHOOKS_ROTATION_GRACE_MS``), then stops."""
        self._require_active("rotate its secret")
        self.previous_secret, self.rotated_at = self.secret, now
        self.secret = self.revealed_secret = new_secret()
        self.record(WebhookSecretRotated, now)

    def take_revealed_secret(self) -> str:
        """The secret this command made (for its reply), once: it is not state to keep."""
        secret, self.revealed_secret = self.revealed_secret, ""
        return secret

    def _require_active(self, action: str) -> None:
        if self.status != ACTIVE:
            raise FailedPrecondition(
                f"webhook subscription {self.id} is {self.status}: cannot {action}"
            )
