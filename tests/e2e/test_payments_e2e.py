"""Payments through real processes: write server, read server and projector with
``CQRS_PAYMENTS_URL`` pointing at a real ``cqrs payments-sandbox`` process, over gRPC and
HTTP. Confirm -> captured in all three read sources; a decline -> FAILED; cancel after the
capture -> refunded; the projector SIGKILLed between the charge and the recorded result ->
one charge and one PaymentCaptured; the sandbox down -> the breaker opens, orders wait
PENDING, nothing else waits, and all complete when it is back."""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from common.pb.shop.v1 import command_service_pb2 as cpb
from common.pb.shop.v1 import command_service_pb2_grpc as cpb_grpc
from common.pb.shop.v1 import query_service_pb2 as qpb
from common.pb.shop.v1 import query_service_pb2_grpc as qpb_grpc
from common.pb.shop.v1 import shop_pb2
from common.settings import Settings
from tests.support.servers import Process, free_port, start
from tests.support.system import System

pytestmark = pytest.mark.e2e

SOURCES = (qpb.SOURCE_PROJECTION, qpb.SOURCE_READ_MODEL, qpb.SOURCE_WRITE_MODEL)


class Sandbox:
    """A ``cqrs payments-sandbox`` process and its HTTP views."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: Process = start(["payments-sandbox", "--port", str(self.port)], env, log)
        wait_for(lambda: self._answers(), 20, "the sandbox to answer")

    def _answers(self) -> bool:
        try:
            return bool(self.get("/healthz") is not None)
        except OSError:
            return False

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=5) as answer:
            return json.loads(answer.read())

    def behave(self, **changes: Any) -> None:
        request = urllib.request.Request(
            self.url + "/_sandbox/behaviour", data=json.dumps(changes).encode(), method="POST",
            headers={"content-type": "application/json"},
        )  # fmt: skip
        with urllib.request.urlopen(request, timeout=5):
            pass

    def charges(self, order_id: str) -> list[dict[str, Any]]:
        data: list[dict[str, Any]] = self.get(f"/v1/charges?order_id={order_id}")["data"]
        return data

    def refunds(self, charge_id: str) -> list[dict[str, Any]]:
        data: list[dict[str, Any]] = self.get(f"/v1/refunds?charge={charge_id}")["data"]
        return data


def wait_for(check: Callable[[], bool], within: float, what: str, explain: str = "") -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except grpc.RpcError as exc:  # a projection still being built on a first start
            if exc.code() != grpc.StatusCode.UNAVAILABLE:  # type: ignore[attr-defined]
                raise
        time.sleep(0.05)
    raise AssertionError(f"{what}: not within {within}s\n{explain}")


@pytest.fixture
def shop(settings: Settings, tmp_path: Path) -> Iterator[tuple[System, Sandbox]]:
    metrics = free_port()
    system = System(settings, tmp_path, {
        "CQRS_PROJECTOR_POLL_INTERVAL_MS": "100",
        "CQRS_PROJECTOR_METRICS_PORT": str(metrics),
        "CQRS_GATEWAY_BREAKER_THRESHOLD": "3",
        "CQRS_GATEWAY_BREAKER_TTL_MS": "1500",
        "CQRS_GATEWAY_RETRY_ATTEMPTS": "2",
        "CQRS_PROJECTOR_LEASE_TIMEOUT_MS": "2000",
    })  # fmt: skip
    sandbox = Sandbox(system.env, tmp_path / "sandbox.log")
    system.env["CQRS_PAYMENTS_URL"] = sandbox.url
    system.metrics_url = f"http://127.0.0.1:{metrics}/metrics"  # type: ignore[attr-defined]
    try:
        system.start("write")
        system.start("read")
        system.start("projector")
        yield system, sandbox
    finally:
        codes = system.stop_all()
        sandbox.process.stop()
    assert set(codes.values()) == {0}, f"{codes}\n{system.log_tails()}"


class Client:
    def __init__(self, system: System) -> None:
        self.system = system
        self._write = grpc.insecure_channel(system.write)
        self._read = grpc.insecure_channel(system.read)
        self.write = cpb_grpc.CommandServiceStub(self._write)
        self.read = qpb_grpc.QueryServiceStub(self._read)

    def close(self) -> None:
        self._write.close()
        self._read.close()

    def order(self, price_cents: int = 1250, quantity: int = 2) -> str:
        customer = self.write.CreateCustomer(
            cpb.CreateCustomerRequest(name="Ann", email=f"ann{time.monotonic_ns()}@example.org")
        ).id
        product = self.write.CreateProduct(
            cpb.CreateProductRequest(name="Mug", price_cents=price_cents, currency="EUR", stock=50)
        ).id
        item = cpb.PlaceOrderRequest.Item(product_id=product, quantity=quantity)
        return self.write.PlaceOrder(cpb.PlaceOrderRequest(customer_id=customer, items=[item])).id

    def payment(self, order_id: str, source: int = qpb.SOURCE_WRITE_MODEL) -> int:
        return int(
            self.read.GetOrder(qpb.GetOrderRequest(id=order_id, source=source)).payment_status
        )

    def wait_payment(self, order_id: str, status: int, within: float = 20) -> None:
        for source in SOURCES:
            wait_for(
                lambda s=source: self.payment(order_id, s) == status, within,
                f"{shop_pb2.PaymentStatus.Name(status)} from source {source}",
                self.system.explain(),
            )  # fmt: skip


@pytest.fixture
def client(shop: tuple[System, Sandbox]) -> Iterator[Client]:
    c = Client(shop[0])
    try:
        yield c
    finally:
        c.close()


def events_of(system: System, order_id: str) -> list[str]:
    history = system.cqrs("events", "show", order_id)
    # Header lines: "v<version>  <occurred_at>  seq <n>  <EventType>  schema v<k>  ..."
    return [line.split()[4] for line in history.stdout.splitlines() if line.startswith("v")]


def test_confirm_is_charged_once_then_ships_and_a_decline_fails(
    shop: tuple[System, Sandbox], client: Client
) -> None:
    _, sandbox = shop
    order = client.order()
    assert client.payment(order) == shop_pb2.PAYMENT_STATUS_UNPAID
    with pytest.raises(grpc.RpcError) as unpaid:
        client.write.ConfirmOrder(cpb.ConfirmOrderRequest(id=order))
        client.write.ShipOrder(cpb.ShipOrderRequest(id=order))
    assert unpaid.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    client.wait_payment(order, shop_pb2.PAYMENT_STATUS_CAPTURED)
    (charge,) = sandbox.charges(order)
    assert (charge["amount"], charge["currency"].upper()) == (2500, "EUR")
    client.write.ShipOrder(cpb.ShipOrderRequest(id=order))

    sandbox.behave(decline_amounts=[777])
    declined = client.order(price_cents=777, quantity=1)
    client.write.ConfirmOrder(cpb.ConfirmOrderRequest(id=declined))
    client.wait_payment(declined, shop_pb2.PAYMENT_STATUS_FAILED)
    with pytest.raises(grpc.RpcError) as failed:
        client.write.ShipOrder(cpb.ShipOrderRequest(id=declined))
    assert failed.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "not paid" in (failed.value.details() or "")


def test_cancel_after_capture_is_refunded(shop: tuple[System, Sandbox], client: Client) -> None:
    _, sandbox = shop
    order = client.order()
    client.write.ConfirmOrder(cpb.ConfirmOrderRequest(id=order))
    client.wait_payment(order, shop_pb2.PAYMENT_STATUS_CAPTURED)
    client.write.CancelOrder(cpb.CancelOrderRequest(id=order))
    client.wait_payment(order, shop_pb2.PAYMENT_STATUS_REFUNDED)
    (charge,) = sandbox.charges(order)
    (refund,) = sandbox.refunds(charge["id"])
    assert refund["amount"] == 2500


def test_a_projector_killed_between_charge_and_result_charges_once(
    shop: tuple[System, Sandbox], client: Client
) -> None:
    system, sandbox = shop
    sandbox.behave(reply_delay_ms=3000)  # charged at once, answered after 3 s
    order = client.order()
    client.write.ConfirmOrder(cpb.ConfirmOrderRequest(id=order))
    wait_for(lambda: len(sandbox.charges(order)) == 1, 20, "the charge", system.explain())
    system.kill("projector")  # the answer never reached it: nothing recorded
    assert client.payment(order) == shop_pb2.PAYMENT_STATUS_PENDING
    sandbox.behave(reply_delay_ms=0)
    system.start("projector")
    client.wait_payment(order, shop_pb2.PAYMENT_STATUS_CAPTURED)
    assert len(sandbox.charges(order)) == 1
    assert sandbox.get("/_sandbox/stats")["idempotent_replays"] >= 1
    assert events_of(system, order).count("PaymentCaptured") == 1


def test_sandbox_down_opens_the_breaker_delays_nothing_else_then_all_complete(
    shop: tuple[System, Sandbox], client: Client
) -> None:
    system, sandbox = shop
    orders = [client.order() for _ in range(3)]
    sandbox.behave(down=True)
    down_at = time.monotonic()
    for order in orders:
        client.write.ConfirmOrder(cpb.ConfirmOrderRequest(id=order))
    host = f"127.0.0.1:{sandbox.port}"
    metrics_url: str = system.metrics_url  # type: ignore[attr-defined]

    def breaker() -> str | None:
        """The breaker's state ("0.0" closed, "1.0" half-open, "2.0" open); ``None`` while
        the projector's metrics do not answer yet (a busy machine) or lack the host."""
        try:
            with urllib.request.urlopen(metrics_url, timeout=5) as answer:
                text = answer.read().decode()
        except urllib.error.URLError:
            return None
        found = re.search(rf'^cqrs_gateway_breaker_state{{host="{host}"}} (\S+)$', text, re.M)
        return found.group(1) if found else None

    wait_for(lambda: breaker() == "2.0", 10, "the breaker to open", system.explain())
    # Meanwhile the projections go on: a product renamed now is projected at once.
    product = client.write.CreateProduct(
        cpb.CreateProductRequest(name="Lamp", price_cents=10, currency="EUR", stock=1)
    )
    token = client.write.UpdateProduct(
        cpb.UpdateProductRequest(id=product.id, name="Lamp v2")
    ).consistency_token
    for source in (qpb.SOURCE_PROJECTION, qpb.SOURCE_READ_MODEL):
        started = time.monotonic()
        got = client.read.GetProduct(
            qpb.GetProductRequest(id=product.id, source=source, consistency_token=token),
            timeout=5,
        )
        assert got.name == "Lamp v2" and time.monotonic() - started < 2
    assert all(client.payment(o) == shop_pb2.PAYMENT_STATUS_PENDING for o in orders)
    time.sleep(max(0.0, 10 - (time.monotonic() - down_at)))  # down for 10 s
    assert all(client.payment(o) == shop_pb2.PAYMENT_STATUS_PENDING for o in orders)
    sandbox.behave(down=False)
    for order in orders:
        client.wait_payment(order, shop_pb2.PAYMENT_STATUS_CAPTURED, within=30)
        assert len(sandbox.charges(order)) == 1
    wait_for(lambda: breaker() not in (None, "2.0"), 10, "the breaker to close", system.explain())


def test_many_orders_are_charged_at_once_each_exactly_once(
    shop: tuple[System, Sandbox], client: Client
) -> None:
    """16 orders confirmed together against a provider taking 0.5 s per answer: charged
    concurrently (one at a time they would take 8 s or more), each once, then refunded
    once each after their cancel."""
    system, sandbox = shop
    orders = [client.order() for _ in range(16)]
    sandbox.behave(latency_ms=500)
    started = time.monotonic()
    for order in orders:
        client.write.ConfirmOrder(cpb.ConfirmOrderRequest(id=order))

    def all_are(status: int) -> bool:
        return all(client.payment(o) == status for o in orders)

    wait_for(lambda: all_are(shop_pb2.PAYMENT_STATUS_CAPTURED), 20, "captured", system.explain())
    took = time.monotonic() - started
    assert took < 4, f"16 charges of 0.5 s took {took:.1f} s: not concurrent"
    assert [len(sandbox.charges(o)) for o in orders] == [1] * 16
    for order in orders:
        client.write.CancelOrder(cpb.CancelOrderRequest(id=order))
    wait_for(lambda: all_are(shop_pb2.PAYMENT_STATUS_REFUNDED), 20, "refunded", system.explain())
    for order in orders:
        (charge,) = sandbox.charges(order)
        assert len(sandbox.refunds(charge["id"])) == 1
        assert events_of(system, order).count("PaymentCaptured") == 1
