"""``cqrs probe write|read|projector``: one health check, exit 0 (healthy) or 1.

For container health checks and scripts, with nothing but this package installed (no
curl, no grpcurl): the servers are asked ``grpc.health.v1.Health/Check`` (the server
as a whole, service ""), the projector ``GET /healthz`` on its metrics port (``/livez``
with ``--live``). Targets come from the same settings the processes read (a server
bound to 0.0.0.0 is reached at 127.0.0.1); ``--address`` points elsewhere.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import grpc
from grpc_health.v1 import health_pb2

from common.settings import Settings, connect_address
from cqrs.up import health_status

TARGETS = ("write", "read", "projector")


def probe(
    settings: Settings,
    target: str,
    *,
    address: str | None = None,
    timeout: float = 3.0,
    live: bool = False,
) -> int:
    """Check ``target`` once, print one line about it; 0 if healthy, else 1."""
    if target == "projector":
        ok, line = _projector(settings, address, timeout, live)
    else:
        ok, line = _server(settings, target, address, timeout)
    print(f"{target}: {line}")
    return 0 if ok else 1


def _server(
    settings: Settings, target: str, address: str | None, timeout: float
) -> tuple[bool, str]:
    if address is None:
        if target == "write":
            address = connect_address(settings.write_host, settings.write_port)
        else:
            address = connect_address(settings.read_host, settings.read_port)
    try:
        status = health_status(address, settings, timeout)
    except grpc.RpcError as exc:
        code = exc.code() if isinstance(exc, grpc.Call) else None
        name = code.name if code is not None else "error"
        return False, f"{address} {name}: {exc.details() if isinstance(exc, grpc.Call) else exc}"
    serving = status == health_pb2.HealthCheckResponse.SERVING
    return serving, f"{address} {health_pb2.HealthCheckResponse.ServingStatus.Name(status)}"


def _projector(
    settings: Settings, address: str | None, timeout: float, live: bool
) -> tuple[bool, str]:
    if address is None:
        if not settings.projector_metrics_port:
            return False, "CQRS_PROJECTOR_METRICS_PORT is 0: the projector serves no /healthz"
        address = connect_address("127.0.0.1", settings.projector_metrics_port)
    base = address if "://" in address else f"http://{address}"
    if not base.startswith(("http://", "https://")):
        return False, f"{address}: not an http(s) address"
    url = base.rstrip("/") + ("/livez" if live else "/healthz")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            status, body = response.status, response.read()
    except urllib.error.HTTPError as exc:  # 503 and friends still carry the JSON body
        status, body = exc.code, exc.read()
    except (urllib.error.URLError, OSError) as exc:
        return False, f"{url} unreachable: {getattr(exc, 'reason', exc)}"
    try:
        detail = json.dumps(json.loads(body), sort_keys=True)
    except ValueError:
        detail = body.decode(errors="replace").strip()[:500]
    return status == 200, f"{url} {status} {detail}"
