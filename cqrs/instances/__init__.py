"""Private PostgreSQL and Redis instances, and making both reachable (``cqrs up``).

- :mod:`.network`: probes and URL/port helpers;
- :mod:`.postgres` / :mod:`.redis_server`: a private server of each kind, started from
  the locally installed binaries, stopped with ``stop()``;
- :mod:`.ensure`: ``ensure_services`` probes the configured URLs and starts private
  instances under ``./.data`` for the services that do not answer.
"""

from cqrs.instances.base import (
    PG_BIN_GLOBS,
    InstanceError,
    Lookup,
    PrivateInstance,
    ServicesUnavailable,
    log_tail,
)
from cqrs.instances.ensure import ensure_services, missing_services_message
from cqrs.instances.nats_server import PrivateNats, find_nats_server
from cqrs.instances.network import (
    Probe,
    bind_address,
    free_port,
    is_local_host,
    port_free,
    probe_postgres,
    probe_redis,
    url_host_port,
    with_port,
)
from cqrs.instances.postgres import PrivatePostgres, find_postgres_bin
from cqrs.instances.redis_server import PrivateRedis, find_redis_server

__all__ = [
    "PG_BIN_GLOBS",
    "InstanceError",
    "Lookup",
    "PrivateInstance",
    "PrivateNats",
    "PrivatePostgres",
    "PrivateRedis",
    "Probe",
    "ServicesUnavailable",
    "bind_address",
    "ensure_services",
    "find_nats_server",
    "find_postgres_bin",
    "find_redis_server",
    "free_port",
    "is_local_host",
    "log_tail",
    "missing_services_message",
    "port_free",
    "probe_postgres",
    "probe_redis",
    "url_host_port",
    "with_port",
]
