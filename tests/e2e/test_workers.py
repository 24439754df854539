"""`cqrs read-server --workers 2` / `write-server --workers 2`: two processes share the
port, each answers and exports its own metrics, a killed worker is replaced while the
port keeps serving, SIGTERM stops them all."""

from __future__ import annotations

import os
import signal
import time
import urllib.request
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.scale_out import free_metrics_base
from common.pb.shop.v1 import command_service_pb2 as cpb
from common.pb.shop.v1 import command_service_pb2_grpc as cpb_grpc
from common.pb.shop.v1 import query_service_pb2 as qpb
from common.pb.shop.v1 import query_service_pb2_grpc as qpb_grpc
from common.settings import Settings, worker_metrics_port
from tests.e2e.test_up import _alive, _children
from tests.support.servers import Process, env_for, free_port, start, wait_serving

CHANNELS = 24  # the kernel spreads connections over the workers by their address hash


def _rpc_count(port: int, method: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("cqrs_rpc_total{") and f'method="{method}"' in line
    )


def _workers_of(process: Process, count: int, timeout: float = 30) -> list[int]:
    deadline = time.monotonic() + timeout
    while len(pids := _children(process.proc.pid)) != count:
        assert time.monotonic() < deadline, f"{pids}\n{process.log()}"
        time.sleep(0.1)
    return pids


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as reply:
            return bool(reply.status == 200)
    except OSError:  # not listening yet, or 503 (HTTPError is an OSError)
        return False


def _serving_workers(address: str, metrics: list[int], process: Process) -> None:
    """Wait until every worker's /healthz is 200: its gRPC server has started on the
    shared port. (Its /metrics answers from the process' start, before the bind: the
    kernel would send every connection to the worker that bound first.)"""
    wait_serving(address, process)
    deadline = time.monotonic() + 30
    for port in metrics:
        while not _ready(port):
            assert time.monotonic() < deadline, process.log()
            time.sleep(0.1)


def test_read_workers_share_the_port_and_one_killed_is_replaced(
    settings: Settings, tmp_path: Path
) -> None:
    port, base = free_port(), free_metrics_base(2)
    address = f"127.0.0.1:{port}"
    env = env_for(settings, CQRS_READ_METRICS_PORT=str(base))
    process = start(["read-server", "--port", str(port), "--workers", "2"], env, tmp_path / "r.log")
    try:
        pids = _workers_of(process, 2)
        metrics = [worker_metrics_port(base, i) for i in range(2)]
        _serving_workers(address, metrics, process)
        method = "/shop.v1.QueryService/ListProducts"
        for _ in range(CHANNELS):
            with grpc.insecure_channel(address) as channel:
                qpb_grpc.QueryServiceStub(channel).ListProducts(
                    qpb.ListProductsRequest(source=qpb.SOURCE_WRITE_MODEL), timeout=10
                )
        counts = [_rpc_count(p, method) for p in metrics]
        assert sum(counts) == CHANNELS and min(counts) > 0, counts

        os.kill(pids[0], signal.SIGKILL)
        # The other worker still answers. Connections the kernel had already queued on the
        # killed worker's socket are reset (SO_REUSEPORT): a client reconnects, as here.
        with grpc.insecure_channel(address) as channel:
            health = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=5, wait_for_ready=True
            )
            assert health.status == health_pb2.HealthCheckResponse.SERVING
        deadline = time.monotonic() + 30
        while set(current := _children(process.proc.pid)) in ({pids[1]}, set(pids)):
            assert time.monotonic() < deadline, process.log()
            time.sleep(0.1)
        assert pids[1] in current and len(current) == 2, current
        assert "worker 0 exited" in process.log()
        _serving_workers(address, metrics, process)
    finally:
        code = process.stop()
    assert code == 0, process.log()
    assert not any(_alive(pid) for pid in pids), "a worker survived SIGTERM"


def test_write_workers_serve_commands(settings: Settings, tmp_path: Path) -> None:
    port = free_port()
    address = f"127.0.0.1:{port}"
    process = start(
        ["write-server", "--port", str(port), "--workers", "2"], env_for(settings),
        tmp_path / "w.log",
    )  # fmt: skip
    try:
        workers = _workers_of(process, 2)
        wait_serving(address, process)
        for n in range(8):
            with grpc.insecure_channel(address) as channel:
                created = cpb_grpc.CommandServiceStub(channel).CreateProduct(
                    cpb.CreateProductRequest(
                        name=f"worker mug {n}", price_cents=100, currency="EUR", stock=1
                    ),
                    timeout=10,
                )
                assert created.id
    finally:
        code = process.stop()
    assert code == 0, process.log()
    assert not any(_alive(pid) for pid in workers)


def test_workers_need_a_fixed_port(settings: Settings, tmp_path: Path) -> None:
    process = start(["read-server", "--port", "0", "--workers", "2"], env_for(settings),
                    tmp_path / "r.log")  # fmt: skip
    assert process.proc.wait(30) == 2
    assert "needs a fixed port" in process.log()


def test_workers_do_not_outlive_a_killed_supervisor(settings: Settings, tmp_path: Path) -> None:
    """SIGKILL of the supervisor (it cannot pass anything on): the kernel tells each worker
    (PR_SET_PDEATHSIG), which stops; none is left holding the port."""
    port = free_port()
    process = start(
        ["read-server", "--port", str(port), "--workers", "2"], env_for(settings),
        tmp_path / "r.log",
    )  # fmt: skip
    workers = _workers_of(process, 2)
    wait_serving(f"127.0.0.1:{port}", process)
    process.proc.kill()
    process.proc.wait(timeout=10)
    deadline = time.monotonic() + 30
    while any(_alive(pid) for pid in workers):
        assert time.monotonic() < deadline, f"workers outlived their supervisor: {workers}"
        time.sleep(0.1)
