"""Prometheus metrics shared by the processes, and the exporter start-up."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from common.ops_http import OpsServer, start_ops_server

RPC_TOTAL = Counter("cqrs_rpc_total", "RPCs handled", ["method", "code"])
RPC_LATENCY = Histogram(
    "cqrs_rpc_latency_seconds",
    "RPC handling time",
    ["method"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
PROJECTION_POSITION = Gauge("cqrs_projection_seq", "Last event seq applied", ["projection"])
PROJECTION_LAG = Gauge(
    "cqrs_projection_lag_events", "Committed events not yet applied", ["projection"]
)
PROJECTION_APPLIED = Counter("cqrs_projection_events_total", "Events applied", ["projection"])
PROJECTION_REBUILDS = Counter(
    "cqrs_projection_rebuilds_total",
    "Times the projector rebuilt a projection that had lost its state",
    ["projection"],
)
PROJECTION_FAILED = Gauge(
    "cqrs_projection_failed", "1 while a projection is stopped on a poison event", ["projection"]
)

NEAR_CACHE_READS = Counter(
    "cqrs_near_cache_reads_total",
    "Projection reads by what the read server's near-cache did: hit, miss (then Redis), "
    "bypass (not live, or behind the consistency token)",
    ["projection", "outcome"],
)
NEAR_CACHE_FLUSHES = Counter(
    "cqrs_near_cache_flushes_total",
    "Times a near-cache dropped everything it held, by reason",
    ["projection", "reason"],
)


def start_metrics_server(port: int, host: str = "127.0.0.1") -> OpsServer | None:
    """Expose /metrics (and /healthz, /livez: :mod:`common.ops_http`) on ``port``
    (0 = disabled: None)."""
    return start_ops_server(port, host)
