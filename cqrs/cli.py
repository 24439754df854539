"""The ``cqrs`` console script: one entry point, one subcommand per process or task.

Settings come from the environment once (``common.settings.load_settings``);
flags override them. Subcommand modules are imported lazily so that, e.g.,
``cqrs migrate`` does not load gRPC.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from common import runtime
from common.entities import ENTITIES
from common.settings import Settings, load_settings


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cqrs", description="CQRS shop backend")
    parser.add_argument("--database-url", help="overrides CQRS_DATABASE_URL")
    parser.add_argument("--redis-url", help="overrides CQRS_REDIS_URL")
    parser.add_argument("--log-level", help="overrides CQRS_LOG_LEVEL")
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("migrate", help="create the database if missing and apply migrations")

    write = sub.add_parser("write-server", help="serve shop.v1.CommandService")
    write.add_argument("--host", dest="write_host")
    write.add_argument("--port", dest="write_port", type=int)
    write.add_argument(
        "--workers", dest="write_workers", type=int, help="processes sharing the port"
    )
    # A worker started by `--workers N`: it stops when its supervisor (this pid) is gone.
    write.add_argument("--supervisor", type=int, help=argparse.SUPPRESS)

    read = sub.add_parser("read-server", help="serve shop.v1.QueryService")
    read.add_argument("--host", dest="read_host")
    read.add_argument("--port", dest="read_port", type=int)
    read.add_argument("--workers", dest="read_workers", type=int, help="processes sharing the port")
    read.add_argument("--supervisor", type=int, help=argparse.SUPPRESS)

    projector = sub.add_parser("projector", help="run, rebuild, verify or inspect projections")
    psub = projector.add_subparsers(dest="projector_command", required=True)
    run = psub.add_parser("run", help="follow the event log and keep every projection up to date")
    run.add_argument(
        "--only",
        action="append",
        metavar="CONSUMER",
        help="run only these consumers, e.g. redis:products (repeatable); default: all",
    )
    rebuild = psub.add_parser(
        "rebuild",
        help="replay the event log into fresh projections, then switch; or, with --from, "
        "rewind consumers to a position",
    )
    rebuild.add_argument(
        "--only",
        action="append",
        choices=[*(e.name for e in ENTITIES), "analytics"],
        help="rebuild only these (repeatable); default: all",
    )
    rebuild.add_argument(
        "--from", dest="from_position", metavar="POSITION",
        help="rewind the --consumer(s) to POSITION: they apply the events after it again "
        "(a consistency token c1.<hex>.<hex>, a checkpoint xid:seq as status prints, or "
        "origin); only nats:events, webhooks:fanout and pg:snapshots can be rewound",
    )  # fmt: skip
    rebuild.add_argument(
        "--consumer", action="append", metavar="NAME",
        help="with --from: the consumer to rewind, e.g. nats:events (repeatable)",
    )  # fmt: skip
    rebuild.set_defaults(rebuild_parser=rebuild)
    rebuild.add_argument(
        "--metrics-port",
        type=int,
        default=0,
        help="serve /metrics (rebuild progress) on this port while rebuilding; default: none",
    )
    psub.add_parser("verify", help="compare every projection with the write model")
    psub.add_parser("status", help="checkpoints, lag and stopped projections")
    psub.add_parser("parked", help="aggregates parked by a poison event (exit 1 if any)")
    prune = psub.add_parser(
        "prune-redis",
        help="list the Redis keyspaces no configured projection uses (an older layout, a "
        "spread no longer configured); --delete deletes them",
    )
    prune.add_argument(
        "--delete", action="store_true", help="delete them (default: only list them)"
    )
    unpark = psub.add_parser(
        "unpark", help="replay parked aggregates after a fix (the running projector does it)"
    )
    unpark.add_argument("consumer", help="e.g. redis:orders")
    unpark.add_argument("aggregate", nargs="?", help="one aggregate id; default: all of it")
    unpark.add_argument(
        "--wait",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="wait this long for the outcome (0: only ask); default 30",
    )

    webhooks = sub.add_parser("webhooks", help="webhook deliveries: redeliver FAILED ones")
    wsub = webhooks.add_subparsers(dest="webhooks_command", required=True)
    again = wsub.add_parser(
        "redeliver", help="FAILED deliveries back to PENDING (attempts from 0), queues unparked"
    )
    again.add_argument("--subscription", metavar="ID", help="only this subscription's")
    again.add_argument("--delivery", metavar="MSG_ID", help="only this delivery (msg_42 or 42)")

    pay = sub.add_parser(
        "payments-sandbox",
        help="a local Stripe-shaped payment provider (JSON API) for development and tests",
    )
    pay.add_argument("--host", dest="sandbox_host", metavar="HOST", default="127.0.0.1")
    pay.add_argument(
        "--port", dest="sandbox_port", metavar="PORT", type=int, default=8095,
        help="default 8095; 0: any free one",
    )  # fmt: skip
    pay.add_argument(
        "--decline-rate", dest="sandbox_decline_rate", metavar="RATE", type=float, default=0.0,
        help="fraction of new charges declined at random (0..1)",
    )  # fmt: skip
    pay.add_argument(
        "--decline-amounts", dest="sandbox_decline_amounts", metavar="CENTS,...",
        help="cent amounts always declined (comma-separated)",
    )  # fmt: skip
    pay.add_argument(
        "--latency-ms", dest="sandbox_latency_ms", metavar="MS", type=float, default=0.0,
        help="added before every answer of the API",
    )  # fmt: skip
    pay.add_argument(
        "--error-rate", dest="sandbox_error_rate", metavar="RATE", type=float, default=0.0,
        help="fraction of requests answered 500 (0..1)",
    )  # fmt: skip
    pay.add_argument(
        "--throttle-rate", dest="sandbox_throttle_rate", metavar="RATE", type=float, default=0.0,
        help="fraction of requests answered 429 with Retry-After: 1 (0..1)",
    )  # fmt: skip
    pay.add_argument(
        "--seed", dest="sandbox_seed", metavar="N", type=int, help="of the random draws"
    )
    pay.add_argument(
        "--state", dest="sandbox_state", metavar="PATH",
        help="keep charges, refunds and idempotency keys in this JSON file across restarts",
    )  # fmt: skip

    events = sub.add_parser("events", help="print the event log: its tail, or one aggregate")
    esub = events.add_subparsers(dest="events_command", required=True)
    tail = esub.add_parser("tail", help="the newest events, oldest first (commit-safe order)")
    tail.add_argument("--follow", "-f", action="store_true", help="then print new events")
    tail.add_argument("--type", help="only this event type (OrderPlaced) or aggregate type (Order)")
    tail.add_argument("--aggregate", metavar="ID", help="only this aggregate's events")
    tail.add_argument("--limit", "-n", type=int, default=20, help="how many (default 20)")
    show = esub.add_parser("show", help="one aggregate's history, with metadata")
    show.add_argument("aggregate_id", metavar="AGGREGATE_ID")

    sub.add_parser("demo", help="the README's story against the running system, every call printed")
    seed = sub.add_parser("seed", help="load the demo dataset through the write side")
    seed.add_argument("--products", type=int, default=10_000)
    seed.add_argument("--customers", type=int, default=5_000)
    seed.add_argument("--orders-per-customer", type=int, default=2)
    seed.add_argument("--random-seed", type=int, default=42)
    seed.add_argument(
        "--months", type=int, default=0,
        help="create products and customers at the start of this many calendar months and "
        "spread the orders over them in ascending time (default 0: everything now)",
    )  # fmt: skip
    seed.add_argument(
        "--usd-share", type=float, default=0.0,
        help="fraction of the products priced in USD rather than EUR (default 0)",
    )  # fmt: skip

    probe = sub.add_parser(
        "probe",
        help="one health check (gRPC health of a server, /healthz of the projector); exit 0/1",
    )
    probe.add_argument("target", choices=["write", "read", "projector"])
    probe.add_argument(
        "--address",
        help="host:port (projector: host:port or URL) instead of the one from the settings",
    )
    probe.add_argument("--timeout", type=float, default=3.0, help="seconds (default 3)")
    probe.add_argument("--live", action="store_true", help="projector: /livez, not /healthz")

    up = sub.add_parser("up", help="migrate, then run write server, read server and projector")
    up.add_argument("--workers", type=int, help="processes per server (sets both CQRS_*_WORKERS)")
    up.add_argument(
        "--prometheus", nargs="?", type=int, const=9090, metavar="PORT",
        help="also run Prometheus (when installed) scraping the three processes with the "
        "alert rules of deploy/prometheus, on PORT (default 9090; 0: any free port)",
    )  # fmt: skip
    up.add_argument(
        "--projectors", type=int, choices=range(1, 33), default=1, metavar="N",
        help="projector processes sharing the consumers, each leading a fair share (default 1)",
    )  # fmt: skip
    up.add_argument(
        "--cluster", action="store_true",
        help="run the scale-out topology on this machine: a three-master Redis Cluster, a "
        "PostgreSQL primary and a streaming replica (private, under .data/cluster), two "
        "workers per server and two projectors",
    )  # fmt: skip
    up.add_argument(
        "--local", action="store_true",
        help="a system for this machine alone (what `make run` starts): with the servers on a "
        "loopback address, webhooks may go to local receivers; with no CQRS_NATS_URL, the "
        "events are relayed to a NATS answering on 127.0.0.1:4222",
    )  # fmt: skip
    up.add_argument(
        "--no-payments", action="store_true",
        help="do not start the payments sandbox (without CQRS_PAYMENTS_URL orders ship unpaid)",
    )  # fmt: skip

    png = sub.add_parser(
        "dashboard-png",
        help="draw the Grafana dashboard's panels from a Prometheus' data into a PNG",
    )
    png.add_argument("--prometheus", default="http://127.0.0.1:9090", help="its base URL")
    png.add_argument("--minutes", type=float, default=15, help="the last N minutes (default 15)")
    png.add_argument("--out", type=Path, default=Path("docs/dashboard.png"))

    bench = sub.add_parser(
        "bench",
        help="benchmarks (ghz-compatible reports); `cqrs bench data` writes the request data",
        description="Run benchmark scenarios (default: all) against the running system, or "
        "`cqrs bench data` (request data files) or `cqrs bench configs` (bench/ghz/*.json).",
    )
    bench.add_argument("scenarios", nargs="*", metavar="SCENARIO", help="scenarios or groups")
    length = bench.add_mutually_exclusive_group()
    length.add_argument("--duration", type=float, help="seconds per RPC scenario (default 8)")
    length.add_argument("--total", type=int, help="calls per RPC scenario")
    bench.add_argument("--concurrency", type=int, help="calls in flight (default: per scenario)")
    bench.add_argument("--connections", type=int, default=4, help="connections (default 4)")
    bench.add_argument(
        "--driver", choices=["auto", "ghz", "h2load", "builtin"], default="auto",
        help="load generator (auto: ghz, else h2load for reads, else the built-in one)",
    )  # fmt: skip
    bench.add_argument(
        "--workers", type=int, default=max(1, (os.cpu_count() or 2) // 2),
        help="processes of the built-in generator (default: half the cores)",
    )  # fmt: skip
    bench.add_argument(
        "--start", action="store_true", help="start the system (as `cqrs up`) if none answers"
    )
    bench.add_argument(
        "--no-seed", action="store_true", help="use the data as it is (no `cqrs seed` first)"
    )
    bench.add_argument(
        "--analytics-orders", type=int, default=100_000,
        help="analytics group: first top the orders up to this many with "
        "`cqrs seed --months 24` (default 100000; 0: use the data as it is)",
    )  # fmt: skip
    bench.add_argument(
        "--watch-streams", type=int, default=10_000,
        help="watch group: idle streams to open (default 10000; a tenth of it are the "
        "active ones)",
    )  # fmt: skip
    bench.add_argument(
        "--as-of-events", type=int, default=20_000,
        help="as-of: events of the product time travel is measured on (default 20000)",
    )  # fmt: skip
    bench.add_argument("--results", type=Path, help="where to write (default bench/results)")
    bench.add_argument("--samples", type=int, default=1000, help="bench data: requests per file")
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    settings = load_settings()
    overrides = {
        field.name: getattr(args, field.name)
        for field in dataclasses.fields(Settings)
        if getattr(args, field.name, None) is not None
    }
    return dataclasses.replace(settings, **overrides)


def _check_rebuild(args: argparse.Namespace) -> None:
    """``rebuild``'s options that go together (argparse's error, exit 2, otherwise)."""
    rebuild: argparse.ArgumentParser | None = getattr(args, "rebuild_parser", None)
    if rebuild is None:
        return
    if args.from_position is not None and not args.consumer:
        rebuild.error("--from needs --consumer NAME (repeatable): the consumers to rewind")
    if args.consumer and args.from_position is None:
        rebuild.error("--consumer goes with --from POSITION (a rebuild chooses with --only)")
    if args.from_position is not None and args.only:
        rebuild.error(
            "--from and --only do not go together: --only rebuilds projections from the "
            "origin, --from rewinds the consumers named by --consumer"
        )


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    _check_rebuild(args)
    settings = _settings(args)
    try:
        _configure_logs(args, settings)
        if args.command in ("write-server", "read-server", "up"):
            # Tokens and certificates are checked before anything starts: a typo in them
            # is a clear message and exit 2, not a server that is open or dies later.
            from common.rpc.security import security_for

            security_for(settings, "write")
            security_for(settings, "read")
            from write_server.adapters.group_commit import MAX_BATCH_LIMIT

            if not 1 <= settings.write_batch_max <= MAX_BATCH_LIMIT:
                raise ValueError(f"CQRS_WRITE_BATCH_MAX must be 1..{MAX_BATCH_LIMIT}")
        if args.command in ("projector", "up"):
            from projector.parking import parse_policy
            from projector.projections import ALL_PROJECTIONS
            from projector.segments import counts_for

            counts_for(settings.projector_segments, ALL_PROJECTIONS)
            parse_policy(settings.projector_park, ALL_PROJECTIONS)
        if args.command == "projector" and args.projector_command == "run":
            from common.rpc.auth import require_internal_credential

            require_internal_credential(settings)
    except ValueError as exc:
        print(f"cqrs: {exc}", file=sys.stderr)
        return 2
    try:
        return _dispatch(args, settings)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        line = unreachable(exc, settings)
        if line is None:
            raise  # a bug: the crash log (common.logs) has the traceback
        print(f"cqrs {args.command}: {line}", file=sys.stderr)
        return 1


def unreachable(exc: BaseException, settings: Settings) -> str | None:
    """One line for a failure to reach PostgreSQL or Redis (refused, too many clients, not
    accepting connections yet, gone mid-way); ``None`` for any other failure."""
    import redis.exceptions

    from common.outages import is_outage, root_cause
    from cqrs.up import redact

    if not is_outage(exc):
        return None
    cause = root_cause(exc)
    if isinstance(cause, redis.exceptions.RedisError):
        return f"Redis at {redact(settings.redis_url)} is unavailable: {cause}"
    return f"PostgreSQL at {redact(settings.asyncpg_dsn)} is unavailable: {cause}"


def _configure_logs(args: argparse.Namespace, settings: Settings) -> None:
    """Structured logs (common.logs) named for the command this process runs."""
    from common import logs

    process = args.command
    if command_detail := getattr(args, "projector_command", None):
        process = "projector" if command_detail == "run" else f"projector-{command_detail}"
    fmt = settings.log_format
    if process == "up" and fmt.strip().lower() in ("", "auto"):
        # `cqrs up` is the one-terminal tool: text (and text from its children) even when
        # piped; CQRS_LOG_FORMAT=json asks for JSON lines.
        fmt = "text"
    logs.configure(
        process,
        level=settings.log_level,
        fmt=fmt,
        third_party=settings.log_level_third_party,
        levels=settings.log_levels,
    )


def _dispatch(args: argparse.Namespace, settings: Settings) -> int:
    command = args.command
    if command == "migrate":
        from common.db import migrate

        asyncio.run(migrate(settings.asyncpg_dsn, settings.sqlalchemy_url))
        print(f"migrated {settings.asyncpg_dsn}")
        return 0
    if command in ("write-server", "read-server") and args.supervisor:
        from cqrs.children import die_with

        die_with(args.supervisor)
    if command == "write-server":
        if settings.write_workers > 1:
            return _workers(settings, "write-server", settings.write_workers)
        from write_server.server import serve as serve_write

        runtime.run(serve_write(settings))
        return 0
    if command == "read-server":
        if settings.read_workers > 1:
            return _workers(settings, "read-server", settings.read_workers)
        from read_server.server import serve as serve_read

        runtime.run(serve_read(settings))
        return 0
    if command == "projector":
        import projector.main as projector_main

        sub = args.projector_command
        if sub == "run":
            return int(runtime.run(projector_main.run(settings, args.only or None)))
        if sub == "rebuild" and args.from_position is not None:
            from projector.rewind import parse_position

            try:
                position = parse_position(args.from_position)
            except ValueError as exc:
                print(f"cqrs projector rebuild: {exc}", file=sys.stderr)
                return 2
            return int(runtime.run(projector_main.rewind(settings, args.consumer, position)))
        if sub == "rebuild":
            return int(
                runtime.run(projector_main.rebuild(settings, args.only or None, args.metrics_port))
            )
        if sub == "verify":
            return int(asyncio.run(projector_main.verify(settings)))
        if sub == "parked":
            return int(asyncio.run(projector_main.parked(settings)))
        if sub == "prune-redis":
            return int(asyncio.run(projector_main.prune_redis(settings, args.delete)))
        if sub == "unpark":
            unparking = projector_main.unpark(settings, args.consumer, args.aggregate, args.wait)
            return int(asyncio.run(unparking))
        return int(asyncio.run(projector_main.status(settings)))
    if command == "webhooks":
        from cqrs.webhooks import redeliver

        return int(asyncio.run(redeliver(settings, args.subscription, args.delivery)))
    if command == "payments-sandbox":
        import sandbox

        return sandbox.run(args)
    if command == "events":
        from cqrs import events

        if args.events_command == "show":
            return int(asyncio.run(events.show(settings, args.aggregate_id)))
        tail_args = events.TailArgs(args.follow, args.type, args.aggregate, args.limit)
        return int(asyncio.run(events.tail(settings, tail_args)))
    if command == "demo":
        from cqrs.demo import run as demo

        return int(asyncio.run(demo(settings)))
    if command == "seed":
        from cqrs.seed import seed

        return int(
            asyncio.run(
                seed(
                    settings,
                    args.products,
                    args.customers,
                    args.orders_per_customer,
                    args.random_seed,
                    months=args.months,
                    usd_share=args.usd_share,
                )
            )
        )
    if command == "probe":
        from cqrs.probe import probe

        return probe(
            settings, args.target, address=args.address, timeout=args.timeout, live=args.live
        )
    if command == "up":
        from cqrs.up import for_this_machine, up

        if args.workers:
            settings = dataclasses.replace(
                settings, read_workers=args.workers, write_workers=args.workers
            )
        if args.local:
            settings = for_this_machine(settings)
        return up(
            settings,
            prometheus_port=args.prometheus,
            sandbox=not args.no_payments,
            projectors=args.projectors,
            cluster=args.cluster,
        )
    if command == "dashboard-png":
        import time

        from cqrs.dashboard import render

        out = render(args.prometheus, args.out, start=time.time() - 60 * args.minutes)
        print(f"wrote {out}")
        return 0
    if command == "bench":
        return _bench(args, settings)
    raise AssertionError(command)


def _workers(settings: Settings, server: str, count: int) -> int:
    from cqrs.workers import serve_workers

    return serve_workers(settings, server, count)


def _bench(args: argparse.Namespace, settings: Settings) -> int:
    from bench import catalogue, data
    from bench import run as bench_run
    from bench.rpc import Run
    from cqrs.instances.cluster import private_redis_cluster

    if args.scenarios == ["data"]:
        written = asyncio.run(data.write_data_files(settings.asyncpg_dsn, args.samples))
        print(f"wrote {len(written)} data files in {catalogue.DATA_DIR}")
        return 0
    if args.scenarios == ["configs"]:
        written = catalogue.write_ghz_configs()
        print(f"wrote {len(written)} ghz configs in {catalogue.GHZ_DIR}")
        return 0
    duration = args.duration if args.duration or args.total else catalogue.DEFAULT_DURATION_S
    run = Run(
        duration_s=duration,
        total=args.total,
        concurrency=args.concurrency,
        connections=args.connections,
        workers=args.workers,
        driver=args.driver,
    )
    command = " ".join(["cqrs bench", *sys.argv[2:]])
    plan = bench_run.Plan(
        args.scenarios, run, args.start, seed=not args.no_seed, command=command,
        analytics_orders=args.analytics_orders,
        watch_streams=args.watch_streams, as_of_events=args.as_of_events,
        results_root=args.results or catalogue.ROOT / "bench" / "results",
        redis_cluster=private_redis_cluster,
    )  # fmt: skip
    return bench_run.main(settings, plan)


if __name__ == "__main__":
    sys.exit(main())
