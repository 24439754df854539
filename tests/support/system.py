"""The backend's three processes, started, stopped, killed and frozen one by one."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from common.pb.shop.v1 import query_service_pb2 as qpb
from common.pb.shop.v1 import query_service_pb2_grpc as qpb_grpc
from common.settings import Settings
from tests.support.projector_health import every, until
from tests.support.servers import ROOT, Process, env_for, free_port, start, wait_serving

_COMMANDS = {
    "write": ["write-server"],
    "read": ["read-server"],
    "projector": ["projector", "run"],
}


# For a system whose processes a test freezes (SIGSTOP): a process frozen inside a
# transaction holds the commit-safe horizon of the whole PostgreSQL server (every database's
# projectors wait for it) until the server ends the idle transaction. One second, not the
# default 5 s, so tests running beside it on the shared server are held up only that long.
# Frozen while its backend is still sending a statement's result, the transaction is not
# idle but active (blocked writing to the client) until the statement times out: 2 s, not
# the default 10 s (a CI run saw a frozen leader's pg:analytics statement hold its lock and
# the horizon for 10 s, and the standby miss the test's 12 s).
FREEZABLE = {"CQRS_IDLE_IN_TRANSACTION_TIMEOUT_MS": "1000", "CQRS_STATEMENT_TIMEOUT_MS": "2000"}


@dataclass
class System:
    """``cqrs`` processes on ``settings``; each name may run several times (standbys)."""

    settings: Settings
    logs: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    processes: dict[str, Process] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.write_port, self.read_port = free_port(), free_port()
        self.env = env_for(
            self.settings,
            CQRS_WRITE_PORT=str(self.write_port),
            CQRS_READ_PORT=str(self.read_port),
            **self.extra_env,
        )
        self._started = 0

    @property
    def write(self) -> str:
        return f"127.0.0.1:{self.write_port}"

    @property
    def read(self) -> str:
        return f"127.0.0.1:{self.read_port}"

    def start(
        self, kind: str, name: str | None = None, env: dict[str, str] | None = None
    ) -> Process:
        """Start a process of ``kind`` (write, read, projector) under ``name``, with ``env``
        over the system's environment."""
        name = name or kind
        self._started += 1
        log = self.logs / f"{name}.{self._started}.log"
        process = start(_COMMANDS[kind], {**self.env, **(env or {})}, log)
        self.processes[name] = process
        if kind in ("write", "read"):
            wait_serving(self.write if kind == "write" else self.read, process)
        return process

    def start_all(self) -> None:
        for kind in _COMMANDS:
            self.start(kind)

    def wait_built(self, within: float = 60) -> None:
        """Until every projection and read model answers (a first start builds them, and
        meanwhile reads without a consistency token are UNAVAILABLE, "being built")."""
        lists = (
            ("ListProducts", qpb.ListProductsRequest),
            ("ListCustomers", qpb.ListCustomersRequest),
            ("ListOrders", qpb.ListOrdersRequest),
        )
        deadline = time.monotonic() + within
        with grpc.insecure_channel(self.read) as channel:
            stub = qpb_grpc.QueryServiceStub(channel)
            for method, request in lists:
                for source in (qpb.SOURCE_PROJECTION, qpb.SOURCE_READ_MODEL):
                    while True:
                        try:
                            getattr(stub, method)(request(page_size=1, source=source), timeout=5)
                            break
                        except grpc.RpcError as exc:
                            if exc.code() != grpc.StatusCode.UNAVAILABLE:  # type: ignore[attr-defined]
                                raise
                            assert time.monotonic() < deadline, (
                                f"{method} not built\n{self.explain()}"
                            )
                            time.sleep(0.05)

    def wait_following(self, metrics_port: int, within: float = 60) -> None:
        """Until the projector with metrics on ``metrics_port`` leads every consumer and
        follows the log (each built), asked of its /healthz: unlike :meth:`wait_built` this
        makes no call that the read server answers UNAVAILABLE (which the error-ratio
        alert counts)."""
        until("following", lambda: every(metrics_port, "leader", "following"), within, self.explain)

    def signal(self, name: str, sig: int) -> None:
        self.processes[name].proc.send_signal(sig)

    def kill(self, name: str) -> None:
        self.processes[name].stop(signal.SIGKILL)

    def stop_all(self) -> dict[str, int]:
        """SIGTERM everything still running (resumed first if frozen); exit codes by name."""
        codes: dict[str, int] = {}
        for name, process in self.processes.items():
            if process.proc.poll() is None:
                process.proc.send_signal(signal.SIGCONT)
            codes[name] = process.stop()
        return codes

    def cqrs(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run ``python -m cqrs <args>`` against this system."""
        return subprocess.run(
            [sys.executable, "-m", "cqrs", *args],
            env=self.env, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip

    def explain(self) -> str:
        """``cqrs projector status`` and the logs' tails, for a failure message."""
        status = self.cqrs("projector", "status", timeout=60)
        return f"{status.stdout}{status.stderr}\n{self.log_tails()}"

    def log_tails(self, lines: int = 40) -> str:
        return "\n".join(
            f"--- {name}\n" + "\n".join(p.log().splitlines()[-lines:])
            for name, p in self.processes.items()
        )


@contextmanager
def running(settings: Settings, logs: Path, **extra_env: str) -> Iterator[System]:
    """The three processes started; on exit each must stop with status 0 on SIGTERM."""
    system = System(settings, logs, dict(extra_env))
    system.start_all()
    try:
        yield system
    finally:
        codes = system.stop_all()
        assert set(codes.values()) == {0}, f"{codes}\n{system.log_tails()}"
