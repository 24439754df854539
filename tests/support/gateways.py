"""A gateway for tests: quick in-call retries (the tests are about what is retried, not
about how long the back-off is), closed on exit."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from common.gateway import Gateway, GatewayConfig

FAST: dict[str, Any] = {"retry_initial_s": 0.01, "retry_max_s": 0.05}


@asynccontextmanager
async def quick_gateway(
    name: str = "test", *, options: dict[str, Any] | None = None, **overrides: Any
) -> AsyncIterator[Gateway]:
    """A :class:`Gateway` with :data:`FAST` retries and ``overrides`` of its config;
    ``options`` are its constructor's other arguments (resolver, address policy ...)."""
    gw = Gateway(GatewayConfig(**{**FAST, **overrides}), name=name, **(options or {}))
    try:
        yield gw
    finally:
        await gw.aclose()
