"""`cqrs up` as a user runs it: both servers become SERVING, the printed grpcurl
commands work, and Ctrl-C (SIGINT) stops everything with exit code 0."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from common.db import drop_database
from common.pb.shop.v1 import command_service_pb2 as cpb
from common.pb.shop.v1 import command_service_pb2_grpc as cpb_grpc
from common.pb.shop.v1 import query_service_pb2 as qpb
from common.pb.shop.v1 import query_service_pb2_grpc as qpb_grpc
from common.pb.shop.v1 import shop_pb2
from cqrs import prometheus
from cqrs.instances import free_port
from tests.conftest import delete_redis_prefix
from tests.support.env import ADMIN_DSN, REDIS_URL, unique_name
from tests.support.nats import NATS_URL, delete_stream, unique_stream
from tests.support.projector_health import led

pytestmark = pytest.mark.e2e

STARTUP_TIMEOUT_S = 90.0


@dataclass
class Running:
    process: subprocess.Popen[bytes]
    output: Path
    write: str
    read: str
    database: str  # its URL

    def text(self) -> str:
        return self.output.read_text(errors="replace")


@pytest.fixture
def running_up(request: pytest.FixtureRequest) -> Iterator[Running]:
    """`python -m cqrs up` on a fresh database, Redis prefix and free ports; cleaned up after.
    Parametrized indirectly, the parameter is a list of extra arguments."""
    database = unique_name("up")
    prefix = unique_name("up")
    dsn = f"{ADMIN_DSN.rsplit('/', 1)[0]}/{database}"
    write_port, read_port = free_port(), free_port()
    env = {
        **os.environ,
        "CQRS_DATABASE_URL": dsn,
        "CQRS_REDIS_URL": REDIS_URL,
        "CQRS_REDIS_PREFIX": prefix,
        "CQRS_WRITE_HOST": "127.0.0.1",
        "CQRS_WRITE_PORT": str(write_port),
        "CQRS_READ_HOST": "127.0.0.1",
        "CQRS_READ_PORT": str(read_port),
        "CQRS_WRITE_METRICS_PORT": str(free_port()),
        "CQRS_READ_METRICS_PORT": str(free_port()),
        "CQRS_PROJECTOR_METRICS_PORT": str(free_port()),
        "CQRS_PROJECTOR_POLL_INTERVAL_MS": "200",
        # Idle pooled connections closed after a second (30 by default): the idle count
        # is reached sooner, the same count.
        "CQRS_DB_POOL_IDLE_MS": "1000",
    }
    # Its own working directory, so a private instance (none expected here) stays out of the repo.
    param = getattr(request, "param", [])
    args, extra = (param["args"], param["env"]) if isinstance(param, dict) else (param, {})
    env.update(extra)
    workdir = Path(tempfile.mkdtemp(prefix="cqrs-up-e2e-"))
    workdir.chmod(0o755)  # private PostgreSQL servers (--cluster) run as their own user
    output = workdir / "up.log"
    with output.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "cqrs", "up", *args],
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        yield Running(process, output, f"127.0.0.1:{write_port}", f"127.0.0.1:{read_port}", dsn)
    finally:
        if process.poll() is None:
            _kill_tree(process)
        asyncio.run(drop_database(dsn))
        asyncio.run(delete_redis_prefix(prefix))
        shutil.rmtree(workdir)


def test_up_serves_until_interrupted(running_up: Running) -> None:
    up = running_up
    _wait_until_serving(up)
    children = _children(up.process.pid)
    assert len(children) == 4, up.text()  # three processes and the payments sandbox
    sandbox = re.search(r"payments\s+on: (http://127\.0\.0\.1:\d+) \(the sandbox", up.text())
    assert sandbox, up.text()
    # Every integration says whether it is on, and how to turn it on.
    assert "NATS relay    off: set CQRS_NATS_URL" in up.text(), up.text()
    assert "webhooks      on: subscribe with" in up.text(), up.text()
    assert "API tokens    off: every call is accepted" in up.text(), up.text()
    with urllib.request.urlopen(sandbox.group(1) + "/healthz", timeout=5) as answer:
        assert answer.status == 200

    create, listing = _printed_grpcurl_commands(up)
    created = subprocess.run(create, capture_output=True, text=True, timeout=30)
    assert created.returncode == 0, created.stderr
    assert '"id"' in created.stdout
    deadline = time.monotonic() + 15
    while True:
        listed = subprocess.run(listing, capture_output=True, text=True, timeout=30)
        # On a first start the projections are built from the (empty) log: a moment of
        # UNAVAILABLE "being (re)built" (or "is not built", before the projector's first
        # build has begun) is the documented answer, anything else is not.
        building = "Unavailable" in listed.stderr and (
            "is being" in listed.stderr or "is not built" in listed.stderr
        )
        assert listed.returncode == 0 or building, listed.stderr
        if "Coffee mug" in listed.stdout or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert "Coffee mug" in listed.stdout
    # What it may hold at most, printed; what it holds once idle, counted.
    assert re.search(
        r"connections at most: write server 1 x 20 \+ read server 1 x 10 \+ projector 1 x 13 = 43",
        up.text(),
    ), up.text()
    deadline = time.monotonic() + 20
    while (held := _connections(up)) > IDLE_CONNECTIONS_MAX:
        assert time.monotonic() < deadline, f"{held} connections held while idle"
        time.sleep(0.5)

    # `make demo` on this system: the parts it has off are skipped, saying how to turn them on.
    demo = _demo(up)
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr
    assert "skipped: the write server refuses http://127.0.0.1:" in demo.stdout
    assert "the payment was captured" in demo.stdout and "the three sources agree" in demo.stdout

    up.process.send_signal(signal.SIGINT)
    assert up.process.wait(timeout=60) == 0, up.text()
    for pid in children:
        assert not _alive(pid), f"child {pid} survived `cqrs up`"
    # A clean stop: no process (the payments sandbox included) logs an error or a traceback.
    assert "Traceback" not in up.text() and " ERROR " not in up.text(), up.text()[-4000:]


def _demo(up: Running, **env: str) -> subprocess.CompletedProcess[str]:
    """`cqrs demo` against ``up`` (its addresses), with ``env`` added."""
    write_host, write_port = up.write.split(":")
    read_host, read_port = up.read.split(":")
    addresses = {
        "CQRS_WRITE_HOST": write_host, "CQRS_WRITE_PORT": write_port,
        "CQRS_READ_HOST": read_host, "CQRS_READ_PORT": read_port,
    }  # fmt: skip
    return subprocess.run(
        [sys.executable, "-m", "cqrs", "demo"],
        env={**os.environ, **addresses, **env}, capture_output=True, text=True, timeout=180,
    )  # fmt: skip


STREAM = unique_stream()


@pytest.mark.nats
@pytest.mark.parametrize(
    "running_up",
    [{"args": ["--local"], "env": {"CQRS_NATS_STREAM": STREAM.stream,
                                   "CQRS_NATS_SUBJECT_PREFIX": STREAM.prefix}}],
    indirect=True,
)  # fmt: skip
def test_the_demo_walks_the_whole_story(running_up: Running) -> None:
    """`make demo` against `make run`'s `cqrs up --local` (local webhook receivers allowed,
    the events relayed to the NATS on :4222; the stream is the test's own): every step runs
    and checks itself, nothing is skipped."""
    up = running_up
    _wait_until_serving(up)
    try:
        assert (
            "webhooks      on: subscribe with CommandService/CreateWebhookSubscription; "
            "private URLs allowed" in up.text()
        ), up.text()
        assert f"NATS relay    on: {NATS_URL} stream {STREAM.stream}" in up.text(), up.text()
        nats = {"CQRS_NATS_STREAM": STREAM.stream, "CQRS_NATS_SUBJECT_PREFIX": STREAM.prefix}
        demo = _demo(up, **nats)
        assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr + up.text()[-3000:]
        out = demo.stdout
        assert "skipped" not in out, out
        for seen in (
            "the three sources agree",
            "the payment was captured",
            "> QueryService/GetAggregateHistory",
            "> QueryService/GetOrderAsOf",
            "> QueryService/SearchProducts",
            "> QueryService/GetProductSalesStats",
            "OrderPlaced (webhook-signature verified",
            "OrderDelivered (webhook-signature verified",
            f"< {STREAM.prefix}.Order.OrderDelivered #",
            "demo done",
        ):
            assert seen in out, (seen, out[-3000:])
        # The secret is cut short: enough to recognize it, not to use it.
        shown = re.findall(r'"secret":"(whsec_[^"…]*)…"', out)
        assert len(shown) == 1 and len(shown[0]) == 10, shown
    finally:
        asyncio.run(delete_stream(STREAM.stream))
    up.process.send_signal(signal.SIGINT)
    assert up.process.wait(timeout=60) == 0, up.text()


WRITE_TOKEN, READ_TOKEN = "w-" + "a" * 30, "r-" + "b" * 30


@pytest.mark.parametrize(
    "running_up",
    [{"args": [], "env": {"CQRS_WRITE_TOKENS": f"ci:{WRITE_TOKEN}",
                          "CQRS_READ_TOKENS": f"ci-read:{READ_TOKEN}"}}],
    indirect=True,
)  # fmt: skip
def test_up_with_api_tokens_still_charges_orders(running_up: Running) -> None:
    """With the README's token settings, `cqrs up` gives its projector a credential of its
    own: a confirmed order is captured (no poison event), and the projector stays healthy."""
    up = running_up
    _wait_until_serving(up)
    write = [("authorization", f"Bearer {WRITE_TOKEN}")]
    read = [("authorization", f"Bearer {READ_TOKEN}")]
    with grpc.insecure_channel(up.write) as w, grpc.insecure_channel(up.read) as r:
        commands, queries = cpb_grpc.CommandServiceStub(w), qpb_grpc.QueryServiceStub(r)
        customer = commands.CreateCustomer(
            cpb.CreateCustomerRequest(name="Ann", email="ann@example.org"), metadata=write
        ).id
        product = commands.CreateProduct(
            cpb.CreateProductRequest(name="Mug", price_cents=900, currency="EUR", stock=5),
            metadata=write,
        ).id
        item = cpb.PlaceOrderRequest.Item(product_id=product, quantity=1)
        order = commands.PlaceOrder(
            cpb.PlaceOrderRequest(customer_id=customer, items=[item]), metadata=write
        ).id
        commands.ConfirmOrder(cpb.ConfirmOrderRequest(id=order), metadata=write)
        request = qpb.GetOrderRequest(id=order, source=qpb.SOURCE_WRITE_MODEL)
        deadline = time.monotonic() + 30
        while (status := queries.GetOrder(request, metadata=read).payment_status) != (
            shop_pb2.PAYMENT_STATUS_CAPTURED
        ):
            assert time.monotonic() < deadline, f"payment {status}\n{up.text()[-4000:]}"
            time.sleep(0.2)
    assert "poison" not in up.text().lower(), up.text()[-4000:]
    assert WRITE_TOKEN not in up.text()
    assert "API tokens    on for write and read calls" in up.text(), up.text()
    up.process.send_signal(signal.SIGINT)
    assert up.process.wait(timeout=60) == 0, up.text()


@pytest.mark.skipif(prometheus.binary() is None, reason="prometheus is not installed")
@pytest.mark.parametrize("running_up", [["--prometheus", "0"]], indirect=True)
def test_up_with_prometheus_scrapes_every_process(running_up: Running) -> None:
    up = running_up
    _wait_until_serving(up)
    found = re.search(r"Prometheus\s+(http://\S+)", up.text())
    assert found, up.text()
    url = found.group(1)
    deadline = time.monotonic() + 30
    while True:
        targets = prometheus.api(url, "/api/v1/targets")["activeTargets"]
        health = {t["labels"]["job"]: t["health"] for t in targets}
        if health == {"write-server": "up", "read-server": "up", "projector": "up"}:
            break
        assert time.monotonic() < deadline, f"targets: {health}\n{up.text()}"
        time.sleep(0.5)
    rules = prometheus.api(url, "/api/v1/rules")["groups"]
    assert any(rule["name"] == "CqrsProcessDown" for g in rules for rule in g["rules"])
    children = _children(up.process.pid)
    assert len(children) == 5, up.text()  # three processes, the sandbox and Prometheus

    # `make demo` on this system: the parts it has off are skipped, saying how to turn them on.
    demo = _demo(up)
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr
    assert "skipped: the write server refuses http://127.0.0.1:" in demo.stdout
    assert "the payment was captured" in demo.stdout and "the three sources agree" in demo.stdout

    up.process.send_signal(signal.SIGINT)
    assert up.process.wait(timeout=60) == 0, up.text()
    for pid in children:
        assert not _alive(pid), f"child {pid} survived `cqrs up`"


@pytest.mark.parametrize("running_up", [["--projectors", "2", "--no-payments"]], indirect=True)
def test_up_with_two_projectors_shares_the_consumers(running_up: Running) -> None:
    up = running_up
    _wait_until_serving(up)
    ports = [
        int(port) for port in re.findall(r"projector(?:-2)?\s.*?metrics :(\d+)/metrics", up.text())
    ]
    assert len(ports) == 2, up.text()
    assert len(_children(up.process.pid)) == 4, up.text()  # two servers, two projectors
    assert "projector 2 x 13 = 56" in up.text(), up.text()
    deadline = time.monotonic() + 60
    while True:
        leads = [led(port) for port in ports]
        names = [name for lead in leads for name in lead]
        # six projections, pg:analytics, webhooks:fanout and pg:snapshots, each led once,
        # a fair share each: 5 + 4
        if len(names) == len(set(names)) == 9 and sorted(map(len, leads)) == [4, 5]:
            break
        assert time.monotonic() < deadline, f"leads: {leads}\n{up.text()}"
        time.sleep(0.3)
    up.process.send_signal(signal.SIGINT)
    assert up.process.wait(timeout=60) == 0, up.text()


IDLE_CONNECTIONS_MAX = 12  # an idle `make run`, every process and pool counted


def _connections(up: Running) -> int:
    """The PostgreSQL connections to the system's database now."""
    dsn = up.database

    async def count() -> int:
        conn = await asyncpg.connect(f"{dsn.rsplit('/', 1)[0]}/postgres")
        try:
            found = await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = $1", dsn.rsplit("/", 1)[1]
            )
            return int(found)
        finally:
            await conn.close()

    return asyncio.run(count())


def _wait_until_serving(up: Running) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    pending = {up.write, up.read}
    while pending:
        assert up.process.poll() is None, f"cqrs up exited early:\n{up.text()}"
        assert time.monotonic() < deadline, f"not SERVING: {pending}\n{up.text()}"
        pending = {address for address in pending if not _serving(address)}
        time.sleep(0.2)
    # The banner follows the health checks; give it a moment to be written.
    while "Ctrl-C stops everything" not in up.text():
        assert time.monotonic() < deadline, up.text()
        time.sleep(0.05)


def _serving(address: str) -> bool:
    with grpc.insecure_channel(address) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=1
            )
        except grpc.RpcError:
            return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def _printed_grpcurl_commands(up: Running) -> tuple[list[str], list[str]]:
    lines = [line.strip() for line in up.text().splitlines()]
    create = next(line for line in lines if line.endswith("CommandService/CreateProduct"))
    listing = next(line for line in lines if line.endswith("QueryService/ListProducts"))
    return shlex.split(create), shlex.split(listing)


def _children(pid: int) -> list[int]:
    """Direct children of ``pid``, from /proc."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # The command name (field 2) may contain spaces: split after its closing paren.
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _kill_tree(process: subprocess.Popen[bytes]) -> None:
    """Last resort after a failed test: kill `cqrs up` and whatever it started."""
    for pid in _children(process.pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    process.kill()
    process.wait()


@pytest.mark.skipif(
    shutil.which("redis-cli") is None or shutil.which("redis-server") is None,
    reason="redis-server and redis-cli are not installed: --cluster runs a Redis Cluster",
)
@pytest.mark.parametrize("running_up", [["--cluster", "--no-payments"]], indirect=True)
def test_up_cluster_runs_the_scale_out_topology(running_up: Running) -> None:
    """`cqrs up --cluster`: a three-master Redis Cluster, a PostgreSQL primary and its
    streaming replica of its own, two workers per server, two projectors; a product written
    is read back with its token from all three sources, the read models from the replica."""
    up = running_up
    _wait_until_serving(up)
    text = up.text()
    assert "started private Redis Cluster at redis+cluster://" in text, text
    assert re.search(r"read replica\s+postgresql://", text), text
    assert "write server 2 x 20 + read server 2 x 10 + projector 2 x 13" in text, text
    # Each Redis projection spread over the three masters, a shard per segment.
    assert "spread over keyspaces: customers 3, orders 3, products 3" in text, text
    create, _ = _printed_grpcurl_commands(up)
    created = subprocess.run(create, capture_output=True, text=True, timeout=30)
    assert created.returncode == 0, created.stderr
    token = re.search(r'"consistency_token": "([^"]+)"', created.stdout)
    assert token, created.stdout
    with grpc.insecure_channel(up.read) as channel:
        read = qpb_grpc.QueryServiceStub(channel)
        for source in (qpb.SOURCE_PROJECTION, qpb.SOURCE_READ_MODEL, qpb.SOURCE_WRITE_MODEL):
            listed = read.ListProducts(
                qpb.ListProductsRequest(source=source, consistency_token=token.group(1)),
                timeout=60,
            )
            assert [p.name for p in listed.products] == ["Coffee mug"], source
    # Each worker of the read server exports on its own port; the calls went to either.
    ports = re.search(r"read server .*?metrics :([\d,]+)/metrics", text)
    assert ports, text
    deadline = time.monotonic() + 10
    while not any(
        'cqrs_db_reads_total{database="replica"}' in _metrics_text(int(port))
        for port in ports.group(1).split(",")
    ):
        assert time.monotonic() < deadline, "the replica answered nothing"
        time.sleep(0.2)
    up.process.send_signal(signal.SIGINT)
    assert up.process.wait(timeout=90) == 0, up.text()
    assert "stopped private Redis Cluster" in up.text()


def _metrics_text(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        return str(answer.read().decode())
