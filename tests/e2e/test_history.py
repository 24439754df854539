"""History and time travel end to end: real ``cqrs write-server`` and ``cqrs read-server``
processes, called over gRPC and through grpcurl, and the ``cqrs events`` CLI."""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from common.pb.shop.v1 import command_service_pb2 as cpb
from common.pb.shop.v1 import command_service_pb2_grpc as cpb_grpc
from common.pb.shop.v1 import history_pb2 as hpb
from common.pb.shop.v1 import query_service_pb2 as qpb
from common.pb.shop.v1 import query_service_pb2_grpc as qpb_grpc
from common.pb.shop.v1 import shop_pb2
from common.settings import Settings
from tests.support.servers import ROOT, grpcurl
from tests.support.system import System

pytestmark = pytest.mark.e2e


@pytest.fixture
def system(settings: Settings, tmp_path: Path) -> Iterator[System]:
    """Write and read server processes (history reads the event table: no projector)."""
    running = System(settings, tmp_path)
    try:
        running.start("write")
        running.start("read")
        yield running
    finally:
        codes = running.stop_all()
    assert set(codes.values()) == {0}, f"{codes}\n{running.log_tails()}"


@dataclass
class Order:
    id: str
    product: str
    history: list[hpb.HistoryEvent]


def place_and_ship(system: System, request_id: str = "") -> Order:
    """A product, a customer, an order confirmed then shipped; the order's history."""
    with (
        grpc.insecure_channel(system.write) as wch,
        grpc.insecure_channel(system.read) as rch,
    ):
        write = cpb_grpc.CommandServiceStub(wch)
        read = qpb_grpc.QueryServiceStub(rch)
        product = write.CreateProduct(
            cpb.CreateProductRequest(name="Cup", price_cents=250, currency="EUR", stock=9)
        )
        customer = write.CreateCustomer(
            cpb.CreateCustomerRequest(name="Ann", email=f"ann-{uuid.uuid4().hex[:8]}@x.org")
        )
        order = write.PlaceOrder(
            cpb.PlaceOrderRequest(
                customer_id=customer.id,
                items=[cpb.PlaceOrderRequest.Item(product_id=product.id, quantity=2)],
                request_id=request_id,
            )
        )
        write.ConfirmOrder(cpb.ConfirmOrderRequest(id=order.id))
        time.sleep(0.01)  # distinct instants for the as-of below
        write.ShipOrder(cpb.ShipOrderRequest(id=order.id))
        reply = read.GetAggregateHistory(
            qpb.GetAggregateHistoryRequest(
                aggregate_type=hpb.AGGREGATE_TYPE_ORDER, aggregate_id=order.id
            )
        )
        return Order(order.id, product.id, list(reply.events))


def test_history_and_as_of_over_grpc(system: System) -> None:
    order = place_and_ship(system, "e2e-order-1")
    placed, confirmed, shipped = order.history
    assert [e.event_type for e in order.history] == [
        "OrderPlaced",
        "OrderConfirmed",
        "OrderShipped",
    ]
    assert [e.version for e in order.history] == [1, 2, 3]
    assert placed.schema_version == 2
    assert json.loads(placed.payload_json)["customer"]["name"] == "Ann"
    assert placed.order_placed.customer_name == "Ann"
    assert placed.metadata.request_id == "e2e-order-1"
    assert placed.metadata.peer.startswith("ipv4:127.0.0.1:")
    assert "grpc-python" in placed.metadata.user_agent
    assert shipped.order_status_changed.status == shop_pb2.ORDER_STATUS_SHIPPED

    with grpc.insecure_channel(system.read) as rch:
        read = qpb_grpc.QueryServiceStub(rch)
        then = read.GetOrderAsOf(qpb.GetOrderAsOfRequest(id=order.id, as_of=confirmed.occurred_at))
        assert (then.status, then.version) == (shop_pb2.ORDER_STATUS_CONFIRMED, 2)
        now = read.GetOrderAsOf(qpb.GetOrderAsOfRequest(id=order.id, as_of=shipped.occurred_at))
        live = read.GetOrder(qpb.GetOrderRequest(id=order.id, source=qpb.SOURCE_WRITE_MODEL))
        assert now == live
        with pytest.raises(grpc.RpcError) as missing:
            read.GetOrderAsOf(qpb.GetOrderAsOfRequest(id=order.id))
        assert missing.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def _grpcurl(
    system: System, method: str, body: dict[str, object]
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [grpcurl(), "-plaintext", "-d", json.dumps(body), system.read, f"shop.v1.QueryService/{method}"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip


def test_history_and_as_of_through_grpcurl(system: System) -> None:
    order = place_and_ship(system)
    history = _grpcurl(
        system,
        "GetAggregateHistory",
        {"aggregate_type": "AGGREGATE_TYPE_ORDER", "aggregate_id": order.id, "page_size": 2},
    )
    assert history.returncode == 0, history.stderr
    page = json.loads(history.stdout)
    assert [e["event_type"] for e in page["events"]] == ["OrderPlaced", "OrderConfirmed"]
    assert page["events"][0]["order_placed"]["customer_name"] == "Ann"
    assert page["next_page_token"]

    confirmed_at = order.history[1].occurred_at.ToJsonString()
    as_of = _grpcurl(system, "GetOrderAsOf", {"id": order.id, "as_of": confirmed_at})
    assert as_of.returncode == 0, as_of.stderr
    assert json.loads(as_of.stdout)["status"] == "ORDER_STATUS_CONFIRMED"

    before = order.history[0].occurred_at.ToDatetime()
    early = _grpcurl(
        system, "GetOrderAsOf", {"id": order.id, "as_of": f"{before.year - 1}-01-01T00:00:00Z"}
    )
    assert (
        early.returncode != 0 and "NotFound" in early.stderr and "did not exist yet" in early.stderr
    )


def test_cqrs_events_show_and_tail(system: System) -> None:
    order = place_and_ship(system, "e2e-order-1")
    shown = system.cqrs("events", "show", order.id, timeout=60)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0] == f"Order {order.id}"
    headers = [line for line in lines[1:] if not line.startswith("    ")]
    assert [h.split()[0] for h in headers] == ["v1", "v2", "v3"]
    assert "OrderPlaced  schema v2" in headers[0] and "request_id=e2e-order-1" in headers[0]
    assert json.loads(lines[2])["customer"]["name"] == "Ann"

    missing = system.cqrs("events", "show", "01a1ffbd-0000-7000-8000-000000000000", timeout=60)
    assert missing.returncode == 1 and "no events" in missing.stderr

    tail = system.cqrs("events", "tail", "--limit", "2", timeout=60)
    assert tail.returncode == 0, tail.stderr
    last = tail.stdout.splitlines()
    assert [line.split()[4] for line in last] == ["OrderConfirmed", "OrderShipped"]
    assert last[1].split()[2] == f"Order/{order.id}" and last[1].split()[3] == "v3"

    only = system.cqrs("events", "tail", "--type", "ProductStockReserved", timeout=60)
    assert [line.split()[2] for line in only.stdout.splitlines()] == [f"Product/{order.product}"]


def test_cqrs_events_tail_follows_new_commits(system: System) -> None:
    first = place_and_ship(system)
    follower = subprocess.Popen(
        [sys.executable, "-m", "cqrs", "events", "tail", "--follow", "--type", "Order"],
        env=system.env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        # The newest events first (so the follower is past its first read), then new ones.
        lines = _read_lines(follower, 3, within=30)
        assert {line.split()[2] for line in lines} == {f"Order/{first.id}"}
        second = place_and_ship(system)
        lines = _read_lines(follower, 6, within=20)[3:]
        assert [line.split()[4] for line in lines] == [
            "OrderPlaced",
            "OrderConfirmed",
            "OrderShipped",
        ]
        assert {line.split()[2] for line in lines} == {f"Order/{second.id}"}
        assert [int(line.split()[0]) for line in lines] == sorted(int(x.split()[0]) for x in lines)
    finally:
        follower.terminate()
        follower.wait(10)


_OUTPUT: dict[int, bytes] = {}


def _read_lines(process: subprocess.Popen[bytes], count: int, within: float) -> list[str]:
    """The first ``count`` lines ``process`` has printed, waiting for them (raw reads: a
    buffered reader would hide lines it already holds from select)."""
    assert process.stdout is not None
    fd = process.stdout.fileno()
    selector = selectors.DefaultSelector()
    selector.register(fd, selectors.EVENT_READ)
    data = _OUTPUT.get(process.pid, b"")
    deadline = time.monotonic() + within
    while data.count(b"\n") < count:
        left = deadline - time.monotonic()
        if left <= 0 or not selector.select(left):
            raise AssertionError(f"only {data!r} within {within}s")
        chunk = os.read(fd, 65536)
        if not chunk:
            raise AssertionError(f"tail exited ({process.wait()}) after {data!r}")
        data += chunk
        _OUTPUT[process.pid] = data
    return data.decode().splitlines()[:count]
