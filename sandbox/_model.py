"""The sandbox's vocabulary: its answers, its configurable behaviour and its errors."""

from __future__ import annotations

import hashlib
import json
import math
import secrets
import string
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any, TypeAlias

_ID_ALPHABET = string.ascii_letters + string.digits

Json: TypeAlias = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: Json
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(slots=True)
class Behaviour:
    """How the sandbox misbehaves; every field may be changed at run time."""

    decline_rate: float = 0.0  # 0..1: fraction of new charges declined at random
    decline_amounts: list[int] = field(default_factory=list)  # cent amounts always declined
    latency_ms: float = 0.0  # added before every /v1/ answer
    # Added to POSTs after they took effect, before the answer: a client that gives up (or
    # dies) meanwhile leaves a charge behind, which its retry with the same key must find.
    reply_delay_ms: float = 0.0
    error_rate: float = 0.0  # 0..1: fraction of /v1/ requests answered 500
    throttle_rate: float = 0.0  # 0..1: fraction of /v1/ requests answered 429
    down: bool = False  # /v1/ connections closed without an answer
    seed: int | None = None  # of the random draws (None: unpredictable)
    errors_next: int = 0  # the next N /v1/ requests answered 500
    throttles_next: int = 0  # the next N /v1/ requests answered 429

    def update(self, changes: Mapping[str, Any]) -> None:
        """Apply ``changes`` (field name -> JSON value) all or nothing; ValueError names
        the first bad one."""
        known = {f.name for f in fields(self)}
        checked: dict[str, Any] = {}
        for name, value in changes.items():
            if name not in known:
                raise ValueError(f"unknown behaviour {name!r}; known: {', '.join(sorted(known))}")
            checked[name] = _checked(name, value)
        for name, value in checked.items():
            setattr(self, name, value)

    def as_json(self) -> Json:
        """The fields as a JSON object."""
        return asdict(self)


def _checked(name: str, value: Any) -> Any:
    """``value`` as field ``name`` holds it, or ValueError."""

    def number() -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
            raise ValueError(f"{name} must be a number, got {value!r}")
        return float(value)

    def count() -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be a whole number >= 0, got {value!r}")
        return value

    if name.endswith("_rate"):
        rate = number()
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"{name} must be between 0 and 1, got {value!r}")
        return rate
    if name in ("latency_ms", "reply_delay_ms"):
        latency = number()
        if latency < 0 or math.isinf(latency):
            raise ValueError(f"{name} must be >= 0, got {value!r}")
        return latency
    if name == "down":
        if not isinstance(value, bool):
            raise ValueError(f"down must be true or false, got {value!r}")
        return value
    if name == "seed":
        return None if value is None else count()
    if name == "decline_amounts":
        if not isinstance(value, list) or any(
            isinstance(v, bool) or not isinstance(v, int) for v in value
        ):
            raise ValueError(f"decline_amounts must be a list of cent amounts, got {value!r}")
        return list(value)
    return count()  # errors_next, throttles_next


def error(status: int, kind: str, message: str, **extra: Any) -> Answer:
    """A Stripe-shaped error answer."""
    return Answer(status, {"error": {"type": kind, "message": message, **extra}})


def new_id(prefix: str) -> str:
    return prefix + "".join(secrets.choice(_ID_ALPHABET) for _ in range(24))


def fingerprint(method: str, path: str, body: Json) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(f"{method} {path}\n{canonical}".encode()).hexdigest()


def is_amount(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0
