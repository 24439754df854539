"""One settings object per process, read from the environment once at start-up.

Nothing here runs at import time: call :func:`load_settings` from a ``main``.
Command-line flags override the environment via ``dataclasses.replace``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/cqrs"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


@dataclass(frozen=True, slots=True)
class Seconds:
    """The durations the code waits or times out with, in seconds: converted once, from
    the ``*_ms`` settings (the variables' unit), when the settings are built."""

    statement_timeout: float
    db_pool_idle: float
    read_replica_max_lag: float
    consistency_wait_max: float
    projector_poll_interval: float
    projector_lease_timeout: float
    projector_switch_grace: float
    shutdown_drain: float
    shutdown_grace: float
    webhooks_retry_initial: float
    webhooks_retry_max: float
    webhooks_timeout: float
    webhooks_rotation_grace: float
    webhooks_max_age: float
    gateway_breaker_ttl: float


@dataclass(frozen=True, slots=True)
class Settings:
    """Process configuration. Field names mirror the ``CQRS_*`` variables; ``seconds``
    holds the durations the code uses, converted from their ``*_ms`` fields."""

    database_url: str = DEFAULT_DATABASE_URL
    redis_url: str = DEFAULT_REDIS_URL
    redis_prefix: str = "cqrs"
    # Each segment of a split Redis projection in a keyspace (hash tag) of its own, so a
    # Redis Cluster spreads the projection over its masters (common.redis_keys). Read by
    # the projector and the readers: the same in every process, with the same segments.
    redis_spread: bool = False
    write_host: str = "127.0.0.1"
    write_port: int = 50051
    read_host: str = "127.0.0.1"
    read_port: int = 50052
    # Processes serving each port (SO_REUSEPORT); see worker_metrics_port.
    write_workers: int = 1
    read_workers: int = 1
    # 0 disables the Prometheus endpoint of that process.
    write_metrics_port: int = 9101
    read_metrics_port: int = 9102
    projector_metrics_port: int = 9103
    # Where /metrics, /healthz and /livez listen; 0.0.0.0 in containers, so Prometheus
    # in another one can scrape.
    metrics_host: str = "127.0.0.1"
    db_pool_size: int = 10
    # Group commit in the write server (write_server/adapters/group_commit.py): commands
    # that arrive together share a transaction of at most write_batch_max of them, with at
    # most write_batch_executors such transactions at once. 0 executors (the default, as
    # measured on 2 cores: docs/writing.md "Group commit"): one transaction per command.
    write_batch_max: int = 32
    write_batch_executors: int = 0
    # A pooled connection idle this long is closed (beyond the pool's minimum): an idle
    # system holds few of PostgreSQL's connections (common.connection_budget).
    db_pool_idle_ms: int = 30_000
    # asyncpg's prepared-statement cache per connection; 0 behind PgBouncer < 1.21 in
    # transaction mode (a statement prepared on one server connection is not on the next).
    db_statement_cache_size: int = 100
    # A streaming replica the read server reads the read models, search, history and the
    # analytics from (empty: the primary); out of rotation when it lags more than this.
    read_database_url: str = ""
    read_replica_max_lag_ms: int = 5000
    # Idle-in-transaction sessions hold back the projector's safe horizon: kill them.
    idle_in_transaction_timeout_ms: int = 5000
    statement_timeout_ms: int = 10000
    # Upper bound on how long a query waits for a consistency token.
    consistency_wait_max_ms: int = 5000
    # Documents each projection's near-cache in the read server may hold (a page of a
    # list counts as its documents); 0 turns the near-cache off.
    near_cache_documents: int = 50000
    # Bytes the read server's near-caches may hold, per process (split evenly among the
    # three projections; 0 turns them off); keys and values counted, with what Python
    # spends holding them.
    near_cache_bytes: int = 64 * 1024 * 1024
    # Limits of both gRPC servers against clients that hold resources (common/rpc/limits.py):
    # concurrent streams per connection, connections per process (never more than the
    # descriptor limit leaves; 0: that many), idle connections closed, time to say HTTP/2
    # after connecting, connection age and the grace its calls get (0: no limit).
    grpc_max_streams_per_connection: int = 250
    grpc_max_connections: int = 10000
    grpc_connection_idle_ms: int = 300_000
    grpc_handshake_timeout_ms: int = 10_000
    grpc_connection_age_ms: int = 1_800_000
    grpc_connection_age_grace_ms: int = 30_000
    # Open health Watch streams per server process; beyond it RESOURCE_EXHAUSTED.
    health_watch_max: int = 1000
    # The projector's continuous audit (projector/audit.py): documents per second it
    # compares with the write model, round-robin per entity (0: off), and whether a
    # drifted document is rewritten from the write model.
    audit_rate: float = 50.0
    audit_repair: bool = False
    # Watch streams (QueryService.Watch*) open at once per read-server process, and per
    # authenticated subject (beyond either: RESOURCE_EXHAUSTED; 0: Watch off); updates a
    # stream may hold for a slow client before it is told it fell behind.
    watch_streams_max: int = 20_000
    watch_streams_per_subject: int = 5_000
    watch_buffer: int = 64
    # Snapshots for time travel: an aggregate's document after every N-th of its events
    # (the pg:snapshots consumer; 0: none, Get*AsOf replays from the first event).
    snapshot_every: int = 100
    # GetAggregateHistory pages end before their encoded size passes this.
    history_page_max_bytes: int = 1024 * 1024
    # Time travel (Get*AsOf): events one call may replay (more: FAILED_PRECONDITION), and
    # replays running at once per read-server process (the others wait for a turn).
    as_of_max_events: int = 50_000
    as_of_concurrency: int = 2
    projector_batch_size: int = 500
    # Polling is the truth; NOTIFY only wakes the loop earlier than this.
    projector_poll_interval_ms: int = 500
    # A leader silent (frozen) for this long loses its lease to a standby.
    projector_lease_timeout_ms: int = 10000
    # Projector processes share the consumers, each leading at most its fair share
    # (projector.membership); false: each tries to lead them all (one active, the others
    # hot standbys).
    projector_fair_share: bool = True
    # Consumers split into segments, e.g. "redis:orders=4,pg:orders=4" or "*=4" (every
    # projection): projector.segments. Every projector process must run the same split.
    projector_segments: str = ""
    # Projections whose poison events park their aggregate instead of stopping them, e.g.
    # "redis:orders,pg:orders" or "*" (every projection): projector.parking. Default: stop.
    projector_park: str = ""
    # How long a replaced Redis generation is kept after a rebuild switched, so runners
    # and readers mid-call on it finish first.
    projector_switch_grace_ms: int = 2000
    log_level: str = "INFO"
    # auto: JSON lines when stderr is not a terminal, text on one; or json / text.
    log_format: str = "auto"
    # Level of other libraries' loggers (alembic, grpc, asyncio, asyncpg, ...); empty:
    # WARNING, or log_level when that is higher.
    log_level_third_party: str = ""
    # Per-logger levels, e.g. "alembic=INFO,common.rpc.access=DEBUG"; they win.
    log_levels: str = ""
    # SIGTERM: health turns NOT_SERVING, new calls are still taken for drain_ms (so a
    # balancer polling health moves away), then in-flight calls get grace_ms to finish.
    shutdown_drain_ms: int = 0
    shutdown_grace_ms: int = 5000
    # API tokens (common/rpc/auth.py): "subject:token" pairs, comma-separated, inline or in
    # a file; kept out of repr so no log or traceback shows them.
    write_tokens: str = field(default="", repr=False)
    write_tokens_file: str = ""
    read_tokens: str = field(default="", repr=False)
    read_tokens_file: str = ""
    # Reachable without a token: "health", "reflection" or full service names.
    auth_public_services: str = "health,reflection"
    # Server TLS (PEM paths); a client CA makes it mutual TLS (common/rpc/tls.py).
    tls_cert: str = ""
    tls_key: str = ""
    tls_client_ca: str = ""
    # How this package's own clients (cqrs up, cqrs probe) reach the servers: the CA that
    # signed their certificates, a client certificate for mutual TLS, a token.
    tls_ca: str = ""
    tls_client_cert: str = ""
    tls_client_key: str = ""
    client_token: str = field(default="", repr=False)
    # The NATS JetStream relay (projector consumer ``nats:events``): unset = no relay. The
    # stream is created if missing; its duplicate window only backs up the relay's own
    # fence (it reads the stream's last relayed position on every (re)start).
    nats_url: str = field(default="", repr=False)  # may carry user:password
    nats_stream: str = "SHOP_EVENTS"
    nats_subject_prefix: str = "shop.events"
    nats_duplicate_window_s: float = 600.0

    # Webhooks (write server: URL rules; projector: the dispatcher and its API gateway).
    # Allow loopback/private/link-local webhook URLs (tests, local development).
    webhooks_allow_private: bool = False
    # Attempts per delivery before it is parked as FAILED; the back-off between attempts
    # doubles from initial to max (with jitter).
    webhooks_max_attempts: int = 8
    webhooks_retry_initial_ms: int = 1000
    webhooks_retry_max_ms: int = 300_000
    # Per call: the gateway's timeouts, in-call retries and per-host breaker and rate.
    webhooks_timeout_ms: int = 5000
    # Payments: the provider's base URL (Stripe-shaped; `cqrs up` starts the sandbox and
    # sets it). Unset: orders are never charged and ship unpaid.
    payments_url: str = ""
    # With API tokens on, the subjects that may call the internal RecordPaymentResult.
    internal_subjects: str = "projector"
    # Where the projector's payments process manager reaches the write server (host:port);
    # empty: write_host:write_port (0.0.0.0 / :: read as the loopback address).
    write_address: str = ""
    # After RotateWebhookSecret the previous secret signs beside the new one this long.
    webhooks_rotation_grace_ms: int = 86_400_000
    gateway_retry_attempts: int = 3
    gateway_breaker_threshold: int = 5
    gateway_breaker_ttl_ms: int = 30_000
    # Requests per second to one host (0: unlimited): a webhook subscription keeps up with
    # 500 events/s and payments with 100 captures/s only well above those.
    gateway_rate_per_host: float = 1000.0
    # Connections (= attempts in flight) of each gateway over all hosts, and to one host (a
    # subscription's or the payments' concurrency beyond it waits for a slot).
    gateway_max_connections: int = 100
    gateway_max_connections_per_host: int = 32
    # The most of a webhook receiver's answer the dispatcher reads (then drops the connection).
    webhooks_max_response_bytes: int = 4096
    # Deliveries of one subscription in flight at once (different aggregates; one
    # aggregate's go one after the other, in log order).
    webhooks_max_in_flight: int = 32
    # A delivery failing for this long (since its first failed attempt or open-breaker
    # refusal) is parked as FAILED at its next failure, however few attempts were counted.
    webhooks_max_age_ms: int = 86_400_000
    # Orders the payments process manager charges or refunds at once (one order's requests
    # one after the other).
    payments_concurrency: int = 32

    seconds: Seconds = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Derived, so dataclasses.replace() (flags over the environment) keeps it right.
        names = [f.name for f in fields(Seconds)]
        converted = Seconds(**{n: getattr(self, f"{n}_ms") / 1000 for n in names})
        object.__setattr__(self, "seconds", converted)

    def pg_session_settings(self, application_name: str) -> dict[str, str]:
        """Server settings for every pool's sessions. An idle-in-transaction session
        would hold back the projector's safe horizon (pg_snapshot_xmin): kill it."""
        return {
            "application_name": application_name,
            "statement_timeout": str(self.statement_timeout_ms),
            "idle_in_transaction_session_timeout": str(self.idle_in_transaction_timeout_ms),
        }

    @property
    def write_client_address(self) -> str:
        """How a client of this package reaches the write server."""
        return self.write_address or connect_address(self.write_host, self.write_port)

    @property
    def asyncpg_dsn(self) -> str:
        """The database URL in the plain ``postgresql://`` form asyncpg accepts."""
        return to_plain_dsn(self.database_url)

    @property
    def read_replica_dsn(self) -> str | None:
        """The streaming replica's URL for asyncpg, if one is configured."""
        return to_plain_dsn(self.read_database_url) if self.read_database_url else None

    @property
    def sqlalchemy_url(self) -> str:
        """The database URL with the ``+asyncpg`` driver SQLAlchemy needs."""
        return "postgresql+asyncpg://" + self.asyncpg_dsn.split("://", 1)[1]


def connect_host(host: str) -> str:
    """Where a client on this machine reaches a server bound to ``host``."""
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host in ("::", "[::]"):
        return "::1"
    return host


def connect_address(host: str, port: int) -> str:
    """``host:port`` for a gRPC target, bracketing IPv6 addresses."""
    host = connect_host(host)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def to_plain_dsn(url: str) -> str:
    scheme, rest = url.split("://", 1)
    if scheme.startswith("postgresql") or scheme == "postgres":
        return "postgresql://" + rest
    raise ValueError(f"not a PostgreSQL URL: {url!r}")


def _flag(raw: str) -> bool:
    """``1/true/yes/on`` or ``0/false/no/off`` (any case)."""
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(raw)


_ENV_FIELDS: dict[str, tuple[str, Callable[[str], Any]]] = {
    "CQRS_DATABASE_URL": ("database_url", str),
    "CQRS_REDIS_URL": ("redis_url", str),
    "CQRS_REDIS_PREFIX": ("redis_prefix", str),
    "CQRS_REDIS_SPREAD": ("redis_spread", _flag),
    "CQRS_WRITE_HOST": ("write_host", str),
    "CQRS_WRITE_PORT": ("write_port", int),
    "CQRS_READ_HOST": ("read_host", str),
    "CQRS_READ_PORT": ("read_port", int),
    "CQRS_WRITE_WORKERS": ("write_workers", int),
    "CQRS_READ_WORKERS": ("read_workers", int),
    "CQRS_WRITE_METRICS_PORT": ("write_metrics_port", int),
    "CQRS_READ_METRICS_PORT": ("read_metrics_port", int),
    "CQRS_PROJECTOR_METRICS_PORT": ("projector_metrics_port", int),
    "CQRS_METRICS_HOST": ("metrics_host", str),
    "CQRS_DB_POOL_SIZE": ("db_pool_size", int),
    "CQRS_WRITE_BATCH_MAX": ("write_batch_max", int),
    "CQRS_WRITE_BATCH_EXECUTORS": ("write_batch_executors", int),
    "CQRS_DB_POOL_IDLE_MS": ("db_pool_idle_ms", int),
    "CQRS_DB_STATEMENT_CACHE_SIZE": ("db_statement_cache_size", int),
    "CQRS_READ_DATABASE_URL": ("read_database_url", str),
    "CQRS_READ_REPLICA_MAX_LAG_MS": ("read_replica_max_lag_ms", int),
    "CQRS_IDLE_IN_TRANSACTION_TIMEOUT_MS": ("idle_in_transaction_timeout_ms", int),
    "CQRS_STATEMENT_TIMEOUT_MS": ("statement_timeout_ms", int),
    "CQRS_CONSISTENCY_WAIT_MAX_MS": ("consistency_wait_max_ms", int),
    "CQRS_NEAR_CACHE_DOCUMENTS": ("near_cache_documents", int),
    "CQRS_NEAR_CACHE_BYTES": ("near_cache_bytes", int),
    "CQRS_GRPC_MAX_STREAMS_PER_CONNECTION": ("grpc_max_streams_per_connection", int),
    "CQRS_GRPC_MAX_CONNECTIONS": ("grpc_max_connections", int),
    "CQRS_GRPC_CONNECTION_IDLE_MS": ("grpc_connection_idle_ms", int),
    "CQRS_GRPC_HANDSHAKE_TIMEOUT_MS": ("grpc_handshake_timeout_ms", int),
    "CQRS_GRPC_CONNECTION_AGE_MS": ("grpc_connection_age_ms", int),
    "CQRS_GRPC_CONNECTION_AGE_GRACE_MS": ("grpc_connection_age_grace_ms", int),
    "CQRS_HEALTH_WATCH_MAX": ("health_watch_max", int),
    "CQRS_AUDIT_RATE": ("audit_rate", float),
    "CQRS_AUDIT_REPAIR": ("audit_repair", _flag),
    "CQRS_WATCH_STREAMS_MAX": ("watch_streams_max", int),
    "CQRS_WATCH_STREAMS_PER_SUBJECT": ("watch_streams_per_subject", int),
    "CQRS_WATCH_BUFFER": ("watch_buffer", int),
    "CQRS_SNAPSHOT_EVERY": ("snapshot_every", int),
    "CQRS_HISTORY_PAGE_MAX_BYTES": ("history_page_max_bytes", int),
    "CQRS_AS_OF_MAX_EVENTS": ("as_of_max_events", int),
    "CQRS_AS_OF_CONCURRENCY": ("as_of_concurrency", int),
    "CQRS_PROJECTOR_BATCH_SIZE": ("projector_batch_size", int),
    "CQRS_PROJECTOR_POLL_INTERVAL_MS": ("projector_poll_interval_ms", int),
    "CQRS_PROJECTOR_LEASE_TIMEOUT_MS": ("projector_lease_timeout_ms", int),
    "CQRS_PROJECTOR_FAIR_SHARE": ("projector_fair_share", _flag),
    "CQRS_PROJECTOR_SEGMENTS": ("projector_segments", str),
    "CQRS_PROJECTOR_PARK": ("projector_park", str),
    "CQRS_PROJECTOR_SWITCH_GRACE_MS": ("projector_switch_grace_ms", int),
    "CQRS_LOG_LEVEL": ("log_level", str),
    "CQRS_LOG_FORMAT": ("log_format", str),
    "CQRS_LOG_LEVEL_THIRD_PARTY": ("log_level_third_party", str),
    "CQRS_LOG_LEVELS": ("log_levels", str),
    "CQRS_PAYMENTS_URL": ("payments_url", str),
    "CQRS_INTERNAL_SUBJECTS": ("internal_subjects", str),
    "CQRS_WRITE_ADDRESS": ("write_address", str),
    "CQRS_WEBHOOKS_ALLOW_PRIVATE": ("webhooks_allow_private", _flag),
    "CQRS_WEBHOOKS_MAX_ATTEMPTS": ("webhooks_max_attempts", int),
    "CQRS_WEBHOOKS_RETRY_INITIAL_MS": ("webhooks_retry_initial_ms", int),
    "CQRS_WEBHOOKS_RETRY_MAX_MS": ("webhooks_retry_max_ms", int),
    "CQRS_WEBHOOKS_TIMEOUT_MS": ("webhooks_timeout_ms", int),
    "CQRS_WEBHOOKS_ROTATION_GRACE_MS": ("webhooks_rotation_grace_ms", int),
    "CQRS_GATEWAY_RETRY_ATTEMPTS": ("gateway_retry_attempts", int),
    "CQRS_GATEWAY_BREAKER_THRESHOLD": ("gateway_breaker_threshold", int),
    "CQRS_GATEWAY_BREAKER_TTL_MS": ("gateway_breaker_ttl_ms", int),
    "CQRS_GATEWAY_RATE_PER_HOST": ("gateway_rate_per_host", float),
    "CQRS_GATEWAY_MAX_CONNECTIONS": ("gateway_max_connections", int),
    "CQRS_GATEWAY_MAX_CONNECTIONS_PER_HOST": ("gateway_max_connections_per_host", int),
    "CQRS_WEBHOOKS_MAX_RESPONSE_BYTES": ("webhooks_max_response_bytes", int),
    "CQRS_WEBHOOKS_MAX_IN_FLIGHT": ("webhooks_max_in_flight", int),
    "CQRS_WEBHOOKS_MAX_AGE_MS": ("webhooks_max_age_ms", int),
    "CQRS_PAYMENTS_CONCURRENCY": ("payments_concurrency", int),
    "CQRS_SHUTDOWN_DRAIN_MS": ("shutdown_drain_ms", int),
    "CQRS_SHUTDOWN_GRACE_MS": ("shutdown_grace_ms", int),
    "CQRS_WRITE_TOKENS": ("write_tokens", str),
    "CQRS_WRITE_TOKENS_FILE": ("write_tokens_file", str),
    "CQRS_READ_TOKENS": ("read_tokens", str),
    "CQRS_READ_TOKENS_FILE": ("read_tokens_file", str),
    "CQRS_AUTH_PUBLIC_SERVICES": ("auth_public_services", str),
    "CQRS_TLS_CERT": ("tls_cert", str),
    "CQRS_TLS_KEY": ("tls_key", str),
    "CQRS_TLS_CLIENT_CA": ("tls_client_ca", str),
    "CQRS_TLS_CA": ("tls_ca", str),
    "CQRS_TLS_CLIENT_CERT": ("tls_client_cert", str),
    "CQRS_TLS_CLIENT_KEY": ("tls_client_key", str),
    "CQRS_CLIENT_TOKEN": ("client_token", str),
    "CQRS_NATS_URL": ("nats_url", str),
    "CQRS_NATS_STREAM": ("nats_stream", str),
    "CQRS_NATS_SUBJECT_PREFIX": ("nats_subject_prefix", str),
    "CQRS_NATS_DUPLICATE_WINDOW_S": ("nats_duplicate_window_s", float),
}


WORKER_METRICS_PORT_STRIDE = 100


def worker_metrics_port(base: int, index: int) -> int:
    """Worker ``index``'s metrics port when a server runs ``--workers N`` (0 stays off);
    the stride keeps clear of the other processes' neighbouring defaults."""
    return base + WORKER_METRICS_PORT_STRIDE * index if base else 0


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Build :class:`Settings` from ``environ`` (default: ``os.environ``)."""
    env = os.environ if environ is None else environ
    values: dict[str, object] = {}
    for var, (name, kind) in _ENV_FIELDS.items():
        raw = env.get(var)
        if raw is None or raw == "":
            continue
        try:
            values[name] = kind(raw)
        except ValueError as exc:
            what = "flag (true/false)" if kind is _flag else kind.__name__
            raise ValueError(f"{var}={raw!r} is not a valid {what}") from exc
    return Settings(**values)  # type: ignore[arg-type]


def to_environ(settings: Settings) -> dict[str, str]:
    """The ``CQRS_*`` variables that make :func:`load_settings` return ``settings``
    (for child processes)."""
    return {var: str(getattr(settings, name)) for var, (name, _) in _ENV_FIELDS.items()}
