"""The benchmark scenarios, and the ghz config of each RPC scenario (``bench/ghz/*.json``).

An :class:`RpcScenario` is one unary call driven at a fixed concurrency with request
data drawn from the seeded database (``bench/data/<name>.json``, see
:mod:`bench.data`). Its ghz config uses ghz's long option names and paths relative
to the repository root, so ``ghz --config bench/ghz/get_product_projection.json``
runs as-is from there against ``make run``'s default ports. The other scenarios
(projector, relay, freshness, scale-out, the outbound group's webhooks and payments,
analytics-projector) are not single calls and have no ghz config.

The ``analytics`` group comes last: it grows the database (``cqrs bench`` seeds
orders over past months until it holds ``--analytics-orders``), then drives each
analytics RPC from the read model and from the write model, and measures the
projector with the analytics consumer on the grown log.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
GHZ_DIR = ROOT / "bench" / "ghz"
DATA_DIR = ROOT / "bench" / "data"

READ_HOST = "127.0.0.1:50052"
WRITE_HOST = "127.0.0.1:50051"
QUERY_PROTO = "protos/shop/v1/query_service.proto"
COMMAND_PROTO = "protos/shop/v1/command_service.proto"
HEALTH_PROTO = "bench/protos/grpc/health/v1/health.proto"

SOURCES = {
    "projection": "SOURCE_PROJECTION",
    "read_model": "SOURCE_READ_MODEL",
    "write_model": "SOURCE_WRITE_MODEL",
}
# The analytics RPCs have two sources (no Redis projection).
ANALYTICS_SOURCES = ("read_model", "write_model")
# Analytics calls in flight: the write model's aggregates take hundreds of milliseconds at
# 100,000 orders, so 50 in flight would only queue on the read server's pool (p50 of
# seconds, the generator's 20 s deadline); both sources are driven alike.
ANALYTICS_CONCURRENCY = 16
DEFAULT_DURATION_S = 8.0
DEFAULT_CONCURRENCY = 50
DEFAULT_CONNECTIONS = 4


@dataclass(frozen=True, slots=True)
class RpcScenario:
    """One unary RPC under load."""

    name: str
    group: str  # floor | reads | writes | analytics
    server: str  # read | write
    call: str  # ghz form: package.Service.Method
    request: str  # what each data-file entry asks (for the data generator)
    concurrency: int = DEFAULT_CONCURRENCY
    source: str = ""  # reads, analytics: projection | read_model | write_model
    entity: str = ""  # reads: products | customers | orders (a chart groups by it)

    @property
    def shape(self) -> str:
        """The call without its source: ``monthly_revenue_read_model`` -> ``monthly_revenue``."""
        return self.name.removesuffix(f"_{self.source}") if self.source else self.name

    @property
    def proto(self) -> str:
        if self.call.startswith("grpc.health"):
            return HEALTH_PROTO
        return QUERY_PROTO if self.server == "read" else COMMAND_PROTO

    @property
    def path(self) -> str:
        """The gRPC method path: ``/package.Service/Method``."""
        service, _, method = self.call.rpartition(".")
        return f"/{service}/{method}"

    @property
    def data_file(self) -> Path:
        return DATA_DIR / f"{self.name}.json"

    def ghz_config(self) -> dict[str, Any]:
        """The ghz config (long option names, paths relative to the repository root)."""
        return {
            "name": self.name,
            "proto": self.proto,
            "import-paths": ["protos"],
            "call": self.call,
            "host": READ_HOST if self.server == "read" else WRITE_HOST,
            "insecure": True,
            "duration": f"{DEFAULT_DURATION_S:g}s",
            "concurrency": self.concurrency,
            "connections": DEFAULT_CONNECTIONS,
            "data-file": str(self.data_file.relative_to(ROOT)),
            "format": "json",
            "output": f"bench/results/ghz/{self.name}.json",
        }


def _reads() -> list[RpcScenario]:
    shapes = [
        ("get_product", "products", "GetProduct", "get"),
        ("list_products", "products", "ListProducts", "page"),
        ("list_products_category", "products", "ListProducts", "category"),
        ("get_customer", "customers", "GetCustomer", "get"),
        ("list_customers", "customers", "ListCustomers", "page"),
        ("get_order", "orders", "GetOrder", "get"),
        ("list_orders", "orders", "ListOrders", "page"),
        ("list_orders_customer", "orders", "ListOrders", "customer"),
    ]
    return [
        RpcScenario(
            f"{name}_{source}",
            "reads",
            "read",
            f"shop.v1.QueryService.{method}",
            request,
            source=source,
            entity=entity,
        )
        for name, entity, method, request in shapes
        for source in SOURCES
    ]


def _writes() -> list[RpcScenario]:
    return [
        RpcScenario(
            f"{name}_c{concurrency}",
            "writes",
            "write",
            f"shop.v1.CommandService.{method}",
            name,
            concurrency=concurrency,
        )
        for name, method in (
            ("create_product", "CreateProduct"),
            ("update_product", "UpdateProduct"),
            ("place_order", "PlaceOrder"),
        )
        for concurrency in (1, 16, 32, 64)
    ]


# The analytics RPCs (shape, method, request kind); ``request`` names the data maker.
ANALYTICS_CALLS = (
    ("customer_stats", "GetCustomerStats", "customer_stats"),
    ("product_sales", "GetProductSalesStats", "product_sales"),
    ("top_products", "ListTopProducts", "top_products"),
    ("top_customers", "ListTopCustomers", "top_customers"),
    ("monthly_revenue", "GetMonthlyRevenue", "monthly_revenue"),
)


def _analytics() -> list[RpcScenario]:
    return [
        RpcScenario(
            f"{shape}_{source}",
            "analytics",
            "read",
            f"shop.v1.QueryService.{method}",
            request,
            concurrency=ANALYTICS_CONCURRENCY,
            source=source,
        )
        for shape, method, request in ANALYTICS_CALLS
        for source in ANALYTICS_SOURCES
    ]


FLOOR = RpcScenario("floor", "floor", "read", "grpc.health.v1.Health.Check", "health")
RPC_SCENARIOS: dict[str, RpcScenario] = {
    s.name: s for s in [FLOOR, *_reads(), *_writes(), *_analytics()]
}
# Scenarios that are not one RPC (their own modules run them), and their groups.
OTHER_SCENARIOS: dict[str, str] = {
    # bench/pg_limit.py: PostgreSQL's own pgbench (TPC-B-like, simple-update) at the writes'
    # concurrency on a scratch database, beside the writes
    "pg-limit": "writes",
    "projector": "projector",
    "relay": "projector",  # the NATS relay's catch-up (skipped when NATS does not answer)
    "freshness": "freshness",
    # bench/watch.py: 10,000 idle Watch streams (RSS), 1,000 active ones (delivery time)
    "watch-idle": "watch",
    "watch-active": "watch",
    # bench/as_of.py: GetProductAsOf on a 20,000-event product, from snapshots and without
    "as-of": "as-of",
    "scale-out": "scale-out",
    # bench/cluster.py: the Redis projections on a Redis Cluster of our own beside one Redis
    "cluster": "cluster",
    # bench/outbound.py: webhook deliveries (alone, then beside a slow and a dead receiver)
    # and payment captures, each on a scratch database with processes of its own
    "webhooks": "outbound",
    "payments": "outbound",
    "analytics-projector": "analytics",  # after the analytics RPCs, on the grown log
}
# In running order; analytics last, since it grows the database.
GROUPS = (
    "floor", "reads", "writes", "projector", "freshness", "watch", "as-of", "scale-out",
    "cluster", "outbound",
    "analytics",
)  # fmt: skip


def select(names: list[str]) -> list[str]:
    """Scenario names for the given scenario or group names (all groups if none)."""
    wanted = names or list(GROUPS)
    chosen: list[str] = []
    for name in wanted:
        matched = [s.name for s in RPC_SCENARIOS.values() if s.group == name]
        matched += [o for o, group in OTHER_SCENARIOS.items() if group == name]
        if not matched and (name in RPC_SCENARIOS or name in OTHER_SCENARIOS):
            matched = [name]
        if not matched:
            known = ", ".join(dict.fromkeys([*GROUPS, *OTHER_SCENARIOS, *RPC_SCENARIOS]))
            raise ValueError(f"unknown scenario {name!r}; known: {known}")
        chosen += [m for m in matched if m not in chosen]
    return chosen


def write_ghz_configs(directory: Path = GHZ_DIR) -> list[Path]:
    """Write every RPC scenario's ghz config; returns the files written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for scenario in RPC_SCENARIOS.values():
        path = directory / f"{scenario.name}.json"
        path.write_text(json.dumps(scenario.ghz_config(), indent=2) + "\n")
        written.append(path)
    return written
