"""Reading old event payloads in today's shape.

The event log is append-only: a row keeps the payload schema it was written with
(``events.schema_version``). Readers (projector, history, time travel, the CLI) call
:func:`upcast`, which lifts a payload one version at a time through :data:`UPCASTERS`
until it reaches ``common.events.SCHEMA_VERSIONS`` for its type, so nothing past
this module ever handles an old shape.

To change a payload: bump its type in ``SCHEMA_VERSIONS``, add one upcaster from the
previous version here (a pure function of the payload, never of other events or of
the database), document the old shape in ``common/events.py`` and test the step.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from common import events as ev

Payload = dict[str, Any]
Upcaster = Callable[[Payload], Payload]


class UpcastError(ValueError):
    """A stored payload cannot be brought to the current schema of its type."""

    def __init__(self, event_type: str, schema_version: int, reason: str) -> None:
        super().__init__(f"{event_type} schema v{schema_version}: {reason}")
        self.event_type = event_type
        self.schema_version = schema_version
        self.reason = reason


def _order_placed_v1_to_v2(payload: Payload) -> Payload:
    """v1 carried the customer flat (customer_id/_name/_email); v2 groups it."""
    rest = {k: v for k, v in payload.items() if not k.startswith("customer_")}
    rest["customer"] = {
        "id": payload["customer_id"],
        "name": payload["customer_name"],
        "email": payload["customer_email"],
    }
    return rest


# (event_type, from_version) -> payload of from_version + 1.
UPCASTERS: Mapping[tuple[str, int], Upcaster] = MappingProxyType(
    {
        (ev.ORDER_PLACED, 1): _order_placed_v1_to_v2,
    }
)


def current_version(event_type: str) -> int:
    """The schema version ``event_type`` is written with today (1 for an unknown type:
    the reducers reject those, the history still shows them)."""
    return ev.SCHEMA_VERSIONS.get(event_type, 1)


def upcast(
    event_type: str,
    schema_version: int,
    payload: Payload,
    upcasters: Mapping[tuple[str, int], Upcaster] | None = None,
) -> Payload:
    """``payload`` (stored as ``schema_version``) in the current schema of ``event_type``.

    The input is not modified; a payload already current is returned as is. Raises
    :class:`UpcastError` for a version newer than this code knows (a newer writer: do
    not guess), below 1, a missing step, or a payload the step cannot read.
    """
    steps = UPCASTERS if upcasters is None else upcasters  # looked up now: tests swap it
    target = current_version(event_type)
    if schema_version < 1:
        raise UpcastError(event_type, schema_version, "schema versions start at 1")
    if schema_version > target:
        raise UpcastError(
            event_type,
            schema_version,
            f"newer than the newest known version v{target} (is this reader out of date?)",
        )
    version = schema_version
    while version < target:
        step = steps.get((event_type, version))
        if step is None:
            raise UpcastError(
                event_type, schema_version, f"no upcaster from v{version} to v{version + 1}"
            )
        try:
            payload = step(payload)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise UpcastError(
                event_type, schema_version, f"v{version} payload unreadable: {exc!r}"
            ) from exc
        version += 1
    return payload
