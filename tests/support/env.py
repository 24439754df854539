"""Where the tests find PostgreSQL and Redis (overridable like the app's settings)."""

from __future__ import annotations

import os
import uuid

from common.settings import DEFAULT_REDIS_URL, Settings

ADMIN_DSN = os.environ.get("CQRS_TEST_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("CQRS_TEST_REDIS_URL", DEFAULT_REDIS_URL)


def unique_name(kind: str) -> str:
    return f"cqrs_test_{kind}_{uuid.uuid4().hex[:10]}"


def settings_for(database: str, redis_prefix: str, **overrides: object) -> Settings:
    base = ADMIN_DSN.rsplit("/", 1)[0]
    values: dict[str, object] = {
        "database_url": f"{base}/{database}",
        "redis_url": REDIS_URL,
        "redis_prefix": redis_prefix,
        "write_metrics_port": 0,
        "read_metrics_port": 0,
        "projector_metrics_port": 0,
        "projector_poll_interval_ms": 200,
        "projector_switch_grace_ms": 200,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]
