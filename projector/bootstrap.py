"""Composition root of the projector: pools, the consumers, and what runs them.

Nothing is created at import time; one asyncpg pool and one Redis client per
process, shared by every consumer. To add a consumer of the event log, build it
in :func:`make_consumers`; the runner, leadership, rebuild, status and verify take
it from there.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from redis.asyncio import Redis

from common.connection_budget import pool_options, projector_pool_max
from common.entities import ENTITIES, Entity
from common.gateway import Gateway, GatewayConfig
from common.payments import make_provider
from common.pool_metrics import PoolWatch, watch_pools
from common.redis_client import redis_client
from common.rpc.tls import call_metadata, channel_credentials
from common.settings import Settings
from common.webhook_urls import delivery_vetter
from projector.analytics.consumer import AnalyticsConsumer
from projector.audit import AuditConfig, Auditor
from projector.audit_record import AuditRecord
from projector.consumer import Consumer
from projector.failures import FailureLog
from projector.leadership import AdvisoryLease, LeaseSession
from projector.parking import Parking, parking_for
from projector.payments.process import PaymentsProcess, WriteSide
from projector.process import Projector, make_runner, process_leases
from projector.projection import Projection, segments_of
from projector.projections import ALL_PROJECTIONS, BACKENDS, PG, REDIS, projection_name
from projector.relay import NatsRelay
from projector.runner import ConsumerRunner
from projector.segments import base_name, builds_alone, counts_for
from projector.snapshots import SnapshotWriter
from projector.stores.pg_store import PgProjectionStore
from projector.stores.port import ProjectionStore
from projector.stores.redis_store import RedisProjectionStore
from projector.wakeup import Wakeup
from projector.webhooks.dispatcher import NAME as DISPATCH
from projector.webhooks.dispatcher import DispatchConfig, WebhookDispatcher
from projector.webhooks.fanout import WebhookFanout


@dataclass
class App:
    """The projector's shared connections and consumers; :meth:`close` releases them."""

    settings: Settings
    pool: asyncpg.Pool
    redis: Redis
    failures: FailureLog
    consumers: list[Consumer]
    pools: PoolWatch | None = None
    webhook_wake: asyncio.Event = field(default_factory=asyncio.Event)
    gateway: Gateway | None = None  # made with the dispatcher: only `projector run` calls out

    def consumer(self, name: str) -> Consumer:
        """The consumer called ``name`` (e.g. ``redis:orders``, or one of its segments:
        ``redis:orders#1/4``)."""
        for consumer in self.consumers:
            if consumer.name == base_name(name):
                for part in segments_of(consumer):
                    if part.name == name:
                        return part
                if consumer.name == name:
                    return consumer
        raise ValueError(f"unknown consumer {name!r}; expected one of {self.names()}")

    def runnable(self, names: Sequence[str] | None = None) -> list[Consumer]:
        """What runners follow: every consumer (or those named), a split one as its
        segments (:mod:`projector.segments`)."""
        chosen = self.consumers if names is None else [self.consumer(n) for n in names]
        return [part for c in chosen for part in (segments_of(c) or [c])]

    def names(self) -> list[str]:
        return [c.name for c in self.consumers]

    def select(self, families: Sequence[str] | None) -> list[Consumer]:
        """The consumers of the given families (``products`` ...; all if ``None``) that can
        be rebuilt: one that sends events out (``rebuildable = False``: the NATS relay, the
        webhook fan-out) is left out, and naming it is an error."""
        rebuildable = [c for c in self.consumers if c.rebuildable]
        if not families:
            return rebuildable
        known = {c.name.partition(":")[2] for c in self.consumers}
        unknown = sorted(set(families) - known)
        if unknown:
            raise ValueError(f"unknown projections {unknown}; expected {sorted(known)}")
        chosen = [c for c in self.consumers if c.name.partition(":")[2] in families]
        refused = [c.name for c in chosen if c not in rebuildable]
        if refused:
            raise ValueError(
                f"{', '.join(refused)} cannot be rebuilt: what it sent out stays sent (a "
                "rebuild would send it all again); leave it out of --only"
            )
        return chosen

    @staticmethod
    def rebuilt_as(consumers: Sequence[Consumer]) -> list[Consumer]:
        """What rebuilding ``consumers`` rebuilds: each one whole, except a projection whose
        segments are built alone (spread over Redis keyspaces), rebuilt shard by shard."""
        return [
            part
            for c in consumers
            for part in ([s for s in segments_of(c) if builds_alone(s)] or [c])
        ]

    def projector(self, names: Sequence[str] | None = None) -> Projector:
        """The process's runners, for every consumer or only those named, and the webhook
        dispatcher unless ``names`` leaves out ``webhooks:dispatch``."""
        dispatch = names is None or DISPATCH in names
        wanted = None if names is None else [n for n in names if n != DISPATCH]
        chosen = self.runnable(wanted)
        leases = process_leases(self.settings)
        services = [self.dispatcher(leases)] if dispatch else []
        return Projector(
            self.settings, self.pool, self.failures, chosen, services, leases, self.auditor
        )

    def auditor(self, runners: Sequence[ConsumerRunner]) -> Auditor:
        """The continuous audit of the projections ``runners`` lead (:mod:`projector.audit`)."""
        s = self.settings
        record = AuditRecord(self.redis, s.redis_prefix)
        return Auditor(self.pool, record, runners, AuditConfig(s.audit_rate, s.audit_repair))

    def dispatcher(self, leases: LeaseSession | None = None) -> WebhookDispatcher:
        """The webhook dispatcher (and the API gateway it calls through), its lease held on
        ``leases`` (the process's lease session; default: one of its own)."""
        s = self.settings
        if self.gateway is None:
            self.gateway = Gateway(
                gateway_config(
                    s,
                    read_timeout_s=s.seconds.webhooks_timeout,
                    max_response_bytes=s.webhooks_max_response_bytes,
                ),
                name="webhooks",
                # Every address a receiver's name resolves to, vetted for the connection
                # made with it (DNS rebinding): see common.gateway._addresses.
                vet_address=delivery_vetter(allow_private=s.webhooks_allow_private),
            )
        poll = s.seconds.projector_poll_interval
        lease = AdvisoryLease(
            s.asyncpg_dsn,
            DISPATCH,
            retry_interval=poll,
            lease_timeout=s.seconds.projector_lease_timeout,
            session=leases,
        )
        config = DispatchConfig(
            max_attempts=s.webhooks_max_attempts,
            retry_initial_s=s.seconds.webhooks_retry_initial,
            retry_max_s=s.seconds.webhooks_retry_max,
            timeout_s=s.seconds.webhooks_timeout,
            poll_s=poll,
            allow_private=s.webhooks_allow_private,
            rotation_grace_s=s.seconds.webhooks_rotation_grace,
            max_in_flight=s.webhooks_max_in_flight,
            max_age_s=s.seconds.webhooks_max_age,
        )
        return WebhookDispatcher(self.pool, self.gateway, lease, config, self.webhook_wake)

    def parking(self, consumer: Consumer) -> Parking | None:
        """``consumer``'s parking if ``CQRS_PROJECTOR_PARK`` parks it (else it stops on a
        poison event): :mod:`projector.parking`."""
        return parking_for(consumer, self.pool, self.settings.projector_park)

    def runner(self, consumer: Consumer, wakeup: Wakeup) -> ConsumerRunner:
        return make_runner(self.settings, self.pool, self.failures, consumer, wakeup)

    async def close(self) -> None:
        for consumer in self.consumers:  # consumers with connections of their own (relays)
            await consumer.aclose()
        if self.gateway is not None:
            await self.gateway.aclose()
            self.gateway = None
        if self.pools is not None:
            self.pools.close()
            self.pools = None
        await self.redis.aclose()
        await self.pool.close()


def make_store(
    settings: Settings,
    pool: asyncpg.Pool,
    redis: Redis,
    backend: str,
    kind: Entity,
    segments: int = 1,
) -> ProjectionStore:
    """The live store of one projection, split into ``segments``."""
    if backend == REDIS:
        grace_s = settings.seconds.projector_switch_grace
        return RedisProjectionStore(
            redis,
            settings.redis_prefix,
            kind,
            grace_s=grace_s,
            segments=segments,
            spread=settings.redis_spread,
        )
    assert backend == PG
    return PgProjectionStore(pool, kind, segments=segments)


def make_consumers(
    settings: Settings, pool: asyncpg.Pool, redis: Redis, webhook_wake: asyncio.Event
) -> list[Consumer]:
    """Every consumer of the event log this process runs (``webhook_wake`` is set when the
    webhook fan-out added deliveries)."""
    split = counts_for(settings.projector_segments, ALL_PROJECTIONS)
    projections: list[Consumer] = [
        Projection(
            kind,
            make_store(settings, pool, redis, backend, kind, split[projection_name(backend, kind)]),
        )
        for backend in BACKENDS
        for kind in ENTITIES
    ]
    consumers = [*projections, AnalyticsConsumer(pool), WebhookFanout(pool, webhook_wake.set)]
    if settings.snapshot_every > 0:
        consumers.append(SnapshotWriter(pool, settings.snapshot_every))
    if settings.payments_url:
        consumers.append(payments_process(settings, pool))
    if settings.nats_url:
        relay = NatsRelay(
            pool,
            settings.nats_url,
            stream=settings.nats_stream,
            subject_prefix=settings.nats_subject_prefix,
            duplicate_window_s=settings.nats_duplicate_window_s,
        )
        consumers.append(relay)
    return consumers


def gateway_config(settings: Settings, **specific: Any) -> GatewayConfig:
    """The ``CQRS_GATEWAY_*`` settings every gateway of the projector shares (the webhooks'
    and the payment provider's), with what one of them sets for itself."""
    return GatewayConfig(
        retry_attempts=settings.gateway_retry_attempts,
        breaker_threshold=settings.gateway_breaker_threshold,
        breaker_ttl_s=settings.seconds.gateway_breaker_ttl,
        rate_per_host=settings.gateway_rate_per_host,
        max_connections=settings.gateway_max_connections,
        max_connections_per_host=settings.gateway_max_connections_per_host,
        **specific,
    )


def payments_process(settings: Settings, pool: asyncpg.Pool) -> PaymentsProcess:
    """The payments process manager: the provider at ``CQRS_PAYMENTS_URL`` through a gateway
    of its own, results reported to the write server."""
    gateway = Gateway(gateway_config(settings), name="payments")
    write = WriteSide(
        settings.write_client_address, channel_credentials(settings), call_metadata(settings)
    )
    provider = make_provider(settings.payments_url, gateway)
    return PaymentsProcess(pool, provider, write, gateway, settings.payments_concurrency)


def projector_redis_max(settings: Settings) -> int:
    """The projector's Redis pool: a connection for each Redis segment that may be writing
    at once, and some for checkpoints, leases' probes and unparking beside them. Fewer
    than the runners made a busy split projector wait on the pool past its timeout."""
    split = counts_for(settings.projector_segments, ALL_PROJECTIONS)
    runners = sum(split[projection_name(REDIS, kind)] for kind in ENTITIES)
    return max(settings.db_pool_size, 8, runners + 4)


async def bootstrap(settings: Settings) -> App:
    pool = await asyncpg.create_pool(
        settings.asyncpg_dsn,
        min_size=1,
        max_size=projector_pool_max(settings),
        server_settings=settings.pg_session_settings("cqrs-projector"),
        **pool_options(settings),
        # asyncpg's default reset (a round trip per release), not keep_session: with
        # keep_session here, CI twice found a pooled connection inside a transaction asyncpg
        # took for idle (`verify`'s REPEATABLE READ BEGIN: "SET TRANSACTION ISOLATION LEVEL
        # must be called before any query"), after projector runs; never before it, nor on
        # the read and write servers' pools. Not reproduced locally; the reset's round trip
        # is what the projector gives up until it is.
    )
    redis = redis_client(settings.redis_url, max_connections=projector_redis_max(settings))
    pools = watch_pools(pg={"projector": pool}, redis={"projector": redis})
    wake = asyncio.Event()
    consumers = make_consumers(settings, pool, redis, wake)
    return App(settings, pool, redis, FailureLog(pool), consumers, pools, wake)


@contextlib.asynccontextmanager
async def open_app(settings: Settings) -> AsyncIterator[App]:
    """:func:`bootstrap`, closed on exit."""
    app = await bootstrap(settings)
    try:
        yield app
    finally:
        await app.close()
