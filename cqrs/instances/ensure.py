"""Make PostgreSQL and Redis reachable for ``cqrs up``.

Each service is probed at its configured URL. One that does not answer, on a
host of this machine, is replaced by a private instance under ``data_dir``
(``postgres/`` and ``redis/``, reused next time) started from the locally
installed binaries; the caller stops it with :meth:`PrivateInstance.stop`."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from common.redis_client import is_cluster, node_url
from common.settings import Settings
from cqrs.instances.base import Lookup, PrivateInstance, ServicesUnavailable
from cqrs.instances.network import (
    Probe,
    free_port,
    is_local_host,
    probe_postgres,
    probe_redis,
    url_host_port,
    with_port,
)
from cqrs.instances.postgres import PrivatePostgres, find_postgres_bin
from cqrs.instances.redis_server import PrivateRedis, find_redis_server


@dataclass(slots=True)
class _Plan:
    """What to do about one service."""

    name: str
    url: str
    host: str
    port: int
    probe: Probe
    binary: str | Path | None = None


def ensure_services(
    settings: Settings,
    data_dir: Path,
    *,
    lookup: Lookup | None = None,
    timeout: float = 1.0,
) -> tuple[Settings, list[PrivateInstance]]:
    """Make PostgreSQL and Redis reachable; returns adjusted settings and what was started.

    Raises :class:`ServicesUnavailable` (before starting anything) if a service is
    unreachable and cannot be started here, and :class:`InstanceError` if starting fails.
    """
    lookup = lookup or Lookup()
    # Absolute: the servers run with another working directory (and maybe as another user).
    data_dir = data_dir.resolve()
    pg_host, pg_port = url_host_port(settings.asyncpg_dsn, 5432)
    # A Redis Cluster answers for itself through its first seed node; it is never replaced
    # by a private single Redis (`cqrs up --cluster` starts a private cluster instead).
    redis_host, redis_port = url_host_port(node_url(settings.redis_url), 6379)
    pg = _Plan(
        "PostgreSQL",
        settings.database_url,
        pg_host,
        pg_port,
        probe_postgres(pg_host, pg_port, timeout),
    )
    redis = _Plan(
        "Redis Cluster" if is_cluster(settings.redis_url) else "Redis",
        settings.redis_url,
        redis_host,
        redis_port,
        probe_redis(redis_host, redis_port, timeout),
    )
    pg_version = _cluster_version(data_dir / "postgres")
    if pg.probe is not Probe.ANSWERS:
        pg.binary = find_postgres_bin(lookup, pg_version)
    if redis.probe is not Probe.ANSWERS and not is_cluster(settings.redis_url):
        redis.binary = find_redis_server(lookup)
    problems = [p for p in (pg, redis) if p.probe is not Probe.ANSWERS and not _can_start(p)]
    if problems:
        raise ServicesUnavailable(missing_services_message(problems))

    started: list[PrivateInstance] = []
    try:
        if pg.probe is not Probe.ANSWERS:
            assert isinstance(pg.binary, Path)
            port = _port_for(pg)
            instance = PrivatePostgres(
                pg.binary, data_dir / "postgres", data_dir / "postgres.log", pg.host, port
            )
            instance.url = with_port(settings.database_url, port)
            _prepare_data_dir(data_dir)
            instance.start()
            started.append(instance)
            settings = dataclasses.replace(settings, database_url=instance.url)
        if redis.probe is not Probe.ANSWERS:
            assert isinstance(redis.binary, str)
            port = _port_for(redis)
            password = urlsplit(settings.redis_url).password
            redis_instance = PrivateRedis(
                redis.binary, data_dir / "redis", data_dir / "redis.log", redis.host, port, password
            )
            redis_instance.url = with_port(settings.redis_url, port)
            _prepare_data_dir(data_dir)
            redis_instance.start()
            started.append(redis_instance)
            settings = dataclasses.replace(settings, redis_url=redis_instance.url)
    except BaseException:
        for instance_ in reversed(started):
            instance_.stop()
        raise
    return settings, started


def _can_start(plan: _Plan) -> bool:
    return plan.binary is not None and is_local_host(plan.host)


def _port_for(plan: _Plan) -> int:
    """The URL's port, unless something that is not the service holds it."""
    if plan.probe is Probe.CLOSED:
        return plan.port
    return free_port(plan.host)


def _cluster_version(pg_data: Path) -> str | None:
    try:
        return (pg_data / "PG_VERSION").read_text().strip()
    except OSError:
        return None


def _prepare_data_dir(data_dir: Path) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        # PostgreSQL then runs as another user, who must be able to enter this directory.
        data_dir.chmod(data_dir.stat().st_mode | 0o111)


_INSTALL_HINT = """\
Either run them yourself and point CQRS_DATABASE_URL / CQRS_REDIS_URL at them, e.g.
  docker compose up -d postgres redis
or install the servers, and `cqrs up` will run private ones under ./.data:
  apt-get install postgresql redis-server     (Debian, Ubuntu)
  brew install postgresql@16 redis            (macOS)"""


def missing_services_message(problems: Sequence[_Plan]) -> str:
    """Explain which services are missing and how to get them."""
    lines = []
    for p in problems:
        where = f"{p.name} at {p.host}:{p.port}"
        state = "nothing answers there" if p.probe is Probe.CLOSED else "another program holds it"
        if not is_local_host(p.host):
            lines.append(
                f"cannot reach {where} ({state}); it is not on this machine, so no "
                "private instance can replace it."
            )
        elif p.name == "Redis Cluster":
            lines.append(
                f"cannot reach {where} ({state}), the first node of CQRS_REDIS_URL: start that "
                "cluster, or run `cqrs up --cluster` for a private one."
            )
        elif p.name == "PostgreSQL":
            lines.append(
                f"cannot reach {where} ({state}), and no PostgreSQL server binaries "
                "(initdb, pg_ctl) are on PATH or in /usr/lib/postgresql/*/bin."
            )
        else:
            lines.append(f"cannot reach {where} ({state}), and redis-server is not on PATH.")
    return "\n".join(["cqrs up: " + line for line in lines] + [_INSTALL_HINT])
