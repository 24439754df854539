"""Prometheus metrics shared by the processes, and the exporter start-up."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from common.ops_http import OpsServer, start_ops_server
from common.projection_checkpoints import segment_parts

RPC_TOTAL = Counter("cqrs_rpc_total", "RPCs handled", ["method", "code"])
RPC_LATENCY = Histogram(
    "cqrs_rpc_latency_seconds",
    "RPC handling time",
    ["method"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
# Every projector consumer's series: ``projection`` (``redis:orders``) and ``segment``
# (``1/4`` for a segment of a split one, projector.segments; "" otherwise).
PROJECTION_LABELS = ("projection", "segment")


def projection_labels(name: str) -> tuple[str, str]:
    """The label values of a consumer (``redis:orders``) or segment (``redis:orders#1/4``)."""
    return segment_parts(name)


PROJECTION_POSITION = Gauge("cqrs_projection_seq", "Last event seq applied", PROJECTION_LABELS)
PROJECTION_LAG = Gauge(
    "cqrs_projection_lag_events", "Committed events not yet applied", PROJECTION_LABELS
)
PROJECTION_APPLIED = Counter("cqrs_projection_events_total", "Events applied", PROJECTION_LABELS)
PROJECTION_REBUILDS = Counter(
    "cqrs_projection_rebuilds_total",
    "Times the projector rebuilt a projection that had lost its state",
    PROJECTION_LABELS,
)
PROJECTION_FAILED = Gauge(
    "cqrs_projection_failed", "1 while a projection is stopped on a poison event", PROJECTION_LABELS
)
# Applied batches (the runner's, not a rebuild's): how many events, how long the apply took.
PROJECTION_BATCH_EVENTS = Histogram(
    "cqrs_projection_batch_events",
    "Events per applied batch",
    PROJECTION_LABELS,
    buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000),
)
PROJECTION_BATCH_SECONDS = Histogram(
    "cqrs_projection_batch_seconds",
    "Time to apply one batch (store writes and checkpoint)",
    PROJECTION_LABELS,
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
PROJECTION_LAG_SECONDS = Gauge(
    "cqrs_projection_lag_seconds",
    "Age (from events.recorded_at) of the oldest committed event not yet applied; 0 caught up",
    PROJECTION_LABELS,
)
PROJECTION_DELAY = Histogram(
    "cqrs_projection_delay_seconds",
    "Freshness: from recorded_at of a batch's newest event to its application",
    PROJECTION_LABELS,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
PROJECTION_REBUILDING = Gauge(
    "cqrs_projection_rebuilding", "1 while this process rebuilds the projection", PROJECTION_LABELS
)
PROJECTION_REBUILD_PROGRESS = Gauge(
    "cqrs_projection_rebuild_progress",
    "Events copied / events to copy by the current (or last) rebuild, 0..1",
    PROJECTION_LABELS,
)
PROJECTION_LEADER = Gauge(
    "cqrs_projection_leader", "1 while this process holds the projection's lease", PROJECTION_LABELS
)
# The continuous audit (projector/audit.py), by projection (a split one's segments add up):
# documents compared with the write model, and those found to differ from it.
# Parked aggregates (projector/parking.py): how many a projection sets aside now (as its
# runners last read them), and how many times it parked one.
PROJECTION_PARKED = Gauge(
    "cqrs_projection_parked",
    "Aggregates a projection has parked (their events after a poison event set aside)",
    ["projection"],
)
PROJECTION_PARKS = Counter(
    "cqrs_projection_parks_total",
    "Poison events that parked their aggregate instead of stopping the projection",
    ["projection"],
)
# Group commit in the write server (write_server/adapters/group_commit.py).
WRITE_BATCH_COMMANDS = Histogram(
    "cqrs_write_batch_commands",
    "Commands per write transaction (group commit)",
    buckets=(1, 2, 4, 8, 16, 24, 32, 48, 60),
)
WRITE_BATCH_WAIT = Histogram(
    "cqrs_write_batch_wait_seconds",
    "From a command joining the queue to its turn in a batch",
    buckets=(0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
)
AUDIT_CHECKED = Counter(
    "cqrs_audit_checked_total",
    "Documents the continuous audit compared with the write model",
    ["projection"],
)
AUDIT_DRIFT = Counter(
    "cqrs_audit_drift_total",
    "Documents the continuous audit found differing from the write model (drift)",
    ["projection"],
)
PROJECTOR_PROCESSES = Gauge(
    "cqrs_projector_processes",
    "Projector processes sharing the consumers, as this one counts them (fair share)",
)
PROJECTOR_SHARE = Gauge(
    "cqrs_projector_share", "How many consumers this projector process may lead (fair share)"
)
# The read server's PostgreSQL reads by database, and its streaming replica (if any).
DB_READS = Counter(
    "cqrs_db_reads_total",
    "Read-model, search, history and analytics calls by database",
    ["database"],
)
REPLICA_LAG_BYTES = Gauge(
    "cqrs_read_replica_lag_bytes", "WAL the read replica has not replayed yet (bytes)"
)
REPLICA_LAG_SECONDS = Gauge(
    "cqrs_read_replica_lag_seconds",
    "How long ago the primary stood where the read replica's replay stands now",
)
REPLICA_IN_ROTATION = Gauge(
    "cqrs_read_replica_in_rotation", "1 while the read replica answers (0: the primary does)"
)
OUTBOX_BACKLOG = Gauge(
    "cqrs_outbox_backlog_events",
    "Committed events the slowest projection has not applied yet (capped at 10 million)",
)

# Connection pools, read at scrape time by common.pool_metrics (labels: pool, state).
DB_POOL_CONNECTIONS = "cqrs_db_pool_connections"
DB_POOL_MAX = "cqrs_db_pool_max"
REDIS_POOL_CONNECTIONS = "cqrs_redis_pool_connections"
REDIS_POOL_MAX = "cqrs_redis_pool_max"

WATCH_STREAMS = Gauge("cqrs_watch_streams", "Watch streams open on this read-server process")
WATCH_UPDATES = Counter(
    "cqrs_watch_updates_total", "Updates offered to Watch streams (one per stream)"
)
WATCH_FELL_BEHIND = Counter(
    "cqrs_watch_fell_behind_total", "Watch streams told they fell behind (a slow client)"
)
NEAR_CACHE_READS = Counter(
    "cqrs_near_cache_reads_total",
    "Projection reads by what the read server's near-cache did: hit, miss (then Redis), "
    "bypass (not live, or behind the consistency token)",
    ["projection", "outcome"],
)
REDIS_SCRIPT_CALLS = Counter(
    "cqrs_redis_script_calls_total",
    "Projection read scripts by how they were called: pipelined, or redis_py (the "
    "connection not open yet, an error reply such as NOSCRIPT or MOVED, a lost or stuck "
    "connection)",
    ["path"],
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


# The NATS JetStream relay (projector/relay): acknowledged publishes, and those the stream
# acknowledged as duplicates of a message it already held (dropped by its Nats-Msg-Id).
RELAY_PUBLISHED = Counter(
    "cqrs_relay_published_total", "Events the stream acknowledged as stored", ["relay"]
)
RELAY_DUPLICATES = Counter(
    "cqrs_relay_duplicates_total",
    "Publishes the stream acknowledged as duplicates (already stored, dropped)",
    ["relay"],
)

# The webhook dispatcher (projector/webhooks): attempts by outcome (delivered; retry: a
# failed attempt that will be retried; failed: the last one, the delivery parked;
# circuit_open: postponed, nothing sent) and, from its leader, each active subscription's
# queue.
WEBHOOK_ATTEMPTS = Counter(
    "cqrs_webhook_attempts_total", "Webhook delivery attempts by outcome", ["outcome"]
)
WEBHOOK_PENDING = Gauge(
    "cqrs_webhook_pending_deliveries",
    "Deliveries of an active subscription not delivered yet (PENDING or FAILED)",
    ["subscription"],
)
WEBHOOK_OLDEST_PENDING = Gauge(
    "cqrs_webhook_oldest_pending_seconds",
    "Age of a subscription's oldest undelivered delivery; 0 when none",
    ["subscription"],
)
WEBHOOK_PARKED = Gauge(
    "cqrs_webhook_parked",
    "1 while a subscription's deliveries wait behind a FAILED one (cqrs webhooks redeliver)",
    ["subscription"],
)
