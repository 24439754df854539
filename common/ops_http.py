"""The operations HTTP endpoint of a process: ``/metrics``, ``/healthz``, ``/livez``.

One small server per process, on its metrics port (prometheus_client's own
``start_http_server`` serves nothing but metrics):

- ``/metrics``: the Prometheus text format (``prometheus_client.generate_latest``);
- ``/healthz``: readiness. 200 or 503 with a small JSON body from the process' health
  check (the gRPC servers: their gRPC health status; the projector: its consumers);
- ``/livez``: liveness. 200 while the process answers (the projector also checks that
  its event loop turns); unlike ``/healthz`` it does not fail when a dependency is out,
  since restarting the process would not bring the database back.

It runs in a thread of its own (``http.server``), as prometheus_client's did: the
servers' event loops never handle a scrape, and a check that needs the loop (the
projector's) hops onto it with a timeout, so a stuck loop shows as a failed check.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Health:
    """The answer of a health check: healthy or not, and what to show about it."""

    ok: bool
    detail: dict[str, Any] = field(default_factory=dict)


HealthCheck = Callable[[], Health]


def _always_ok() -> Health:
    return Health(True, {"status": "ok"})


class OpsServer:
    """``/metrics``, ``/healthz`` and ``/livez`` on ``host:port`` (port 0: a free one),
    served from a daemon thread until :meth:`close`. ``health`` and ``live`` may be set
    later (a server's health exists only once it is built); until then they answer ok
    for liveness and 503 "starting" for readiness."""

    def __init__(self, host: str, port: int) -> None:
        self.health: HealthCheck | None = None
        self.live: HealthCheck = _always_ok
        server_class = _Server6 if ":" in host else _Server
        self._server = server_class((host, port), _handler_for(self))
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="ops-http", daemon=True
        )
        self._thread.start()

    def readiness(self) -> Health:
        check = self.health
        if check is None:
            return Health(False, {"status": "starting"})
        return _guarded(check)

    def liveness(self) -> Health:
        return _guarded(self.live)

    def close(self) -> None:
        """Stop serving and release the port."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


def _guarded(check: HealthCheck) -> Health:
    try:
        return check()
    except Exception as exc:  # a broken check is an unhealthy answer, not a 500
        log.warning("health check failed: %s", exc)
        return Health(False, {"status": "error", "error": f"{type(exc).__name__}: {exc}"})


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class _Server6(_Server):
    address_family = socket.AF_INET6


def _handler_for(ops: OpsServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "cqrs-ops"
        protocol_version = "HTTP/1.1"
        timeout = 30  # seconds: an idle or trickling client does not keep its thread

        def do_GET(self) -> None:
            self._answer(head=False)

        def do_HEAD(self) -> None:
            self._answer(head=True)

        def _answer(self, *, head: bool) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, CONTENT_TYPE_LATEST, generate_latest(REGISTRY), head)
            elif path in ("/healthz", "/readyz"):
                self._health(ops.readiness(), head)
            elif path == "/livez":
                self._health(ops.liveness(), head)
            else:
                body = b"/metrics /healthz /livez\n"
                self._send(404, "text/plain; charset=utf-8", body, head)

        def _health(self, health: Health, head: bool) -> None:
            body = (json.dumps(health.detail, sort_keys=True) + "\n").encode()
            self._send(200 if health.ok else 503, "application/json", body, head)

        def _send(self, status: int, kind: str, body: bytes, head: bool) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            if not head:
                self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            """Scrapes and probes every few seconds: not worth a line each."""

    return Handler


def start_ops_server(port: int, host: str = "127.0.0.1") -> OpsServer | None:
    """An :class:`OpsServer` on ``host:port``, or None when ``port`` is 0 (disabled)."""
    if not port:
        return None
    server = OpsServer(host, port)
    where = f"[{host}]" if ":" in host else host
    log.info("metrics and health on http://%s:%d (/metrics /healthz /livez)", where, server.port)
    return server
