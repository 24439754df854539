"""Where the tests find PostgreSQL and Redis (overridable like the app's settings)."""

from __future__ import annotations

import os
import uuid

import pytest

from common.redis_client import is_cluster
from common.settings import DEFAULT_REDIS_URL, Settings

ADMIN_DSN = os.environ.get("CQRS_TEST_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("CQRS_TEST_REDIS_URL", DEFAULT_REDIS_URL)
# The tests' Redis is a cluster (tests/support/on_cluster.py runs them so).
ON_CLUSTER = is_cluster(REDIS_URL)


def one_redis_only(why: str) -> pytest.MarkDecorator:
    """Skips a test on a cluster, saying why it only means something on one Redis."""
    return pytest.mark.skipif(ON_CLUSTER, reason=f"one Redis only: {why}")


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
