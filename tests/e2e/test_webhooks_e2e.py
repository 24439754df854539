"""Webhooks through the real processes: subscribe with grpcurl, a write load, the
projector (fan-out and dispatcher) SIGKILLed twice and SIGTERMed once mid-delivery and
restarted, then every event after the subscription delivered, each aggregate's in order,
signed, and no webhook-id twice except the ones in flight at a SIGKILL (at most the
subscription's in-flight cap per kill: the spec's at-least-once; a SIGTERM lets the
attempts in flight finish and be recorded). And every delivery signed over the bytes sent,
with the command's request_id in them."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
from standardwebhooks.webhooks import Webhook

from common.pb.shop.v1 import command_service_pb2 as cpb
from common.pb.shop.v1 import command_service_pb2_grpc as cpb_grpc
from common.settings import Settings
from tests.support.http_receiver import Receiver
from tests.support.servers import grpcurl
from tests.support.system import System

pytestmark = pytest.mark.e2e

# The subscription's deliveries in flight at once (each one an aggregate of its own).
IN_FLIGHT = 4


@contextmanager
def receiver_thread() -> Iterator[Receiver]:
    """A receiver on a loop of its own: this test blocks its thread (subprocesses, sleeps)."""
    loop = asyncio.new_event_loop()
    receiver = Receiver()
    ready = threading.Event()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(receiver.start())
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert ready.wait(10)
    try:
        yield receiver
    finally:
        asyncio.run_coroutine_threadsafe(receiver.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


def call(address: str, service: str, method: str, body: dict[str, Any]) -> dict[str, Any]:
    done = subprocess.run(
        [grpcurl(), "-plaintext", "-d", json.dumps(body), address, f"shop.v1.{service}/{method}"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    reply: dict[str, Any] = json.loads(done.stdout)
    return reply


def wait_until(check: Any, timeout: float, what: str, system: System) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"{what} not reached in {timeout}s\n{system.explain()}")


def test_subscribe_deliver_across_sigkill_and_list_with_grpcurl(
    settings: Settings, tmp_path: Path
) -> None:
    env = dict(
        CQRS_WEBHOOKS_ALLOW_PRIVATE="true",
        CQRS_PROJECTOR_POLL_INTERVAL_MS="100",
        CQRS_PROJECTOR_LEASE_TIMEOUT_MS="2000",
        CQRS_WEBHOOKS_MAX_IN_FLIGHT=str(IN_FLIGHT),
    )
    system = System(settings, tmp_path, env)
    with receiver_thread() as r:
        r.slow(0.04)  # ~100 deliveries/s (four at once): the kills land mid-queue
        system.start("write")
        system.start("read")
        system.start("projector")
        try:
            sub = call(
                system.write, "CommandService", "CreateWebhookSubscription",
                {"url": r.url("/shop"), "description": "e2e"},
            )  # fmt: skip
            assert sub["secret"].startswith("whsec_"), sub
            with grpc.insecure_channel(system.write) as channel:
                write = cpb_grpc.CommandServiceStub(channel)
                ids = [
                    write.CreateProduct(
                        cpb.CreateProductRequest(
                            name=f"p{i}", price_cents=100, currency="EUR", stock=9
                        )
                    ).id
                    for i in range(60)
                ]
                for pid in ids[:40]:
                    write.UpdateProduct(cpb.UpdateProductRequest(id=pid, stock=3))
            expected = 100
            for sig in (signal.SIGKILL, signal.SIGKILL, signal.SIGTERM):
                seen = len(r.requests)
                wait_until(lambda s=seen: len(r.requests) >= s + 15, 20, "deliveries", system)
                code = system.processes["projector"].stop(sig)
                if sig == signal.SIGTERM:  # finishes the attempt in flight: repeats nothing
                    assert code == 0, system.log_tails()
                system.start("projector")
            wait_until(
                lambda: len({q.headers["webhook-id"] for q in r.requests}) >= expected,
                60, "every delivery", system,
            )  # fmt: skip
            time.sleep(0.5)
            requests = list(r.requests)
            ids_seen = Counter(q.headers["webhook-id"] for q in requests)
            assert len(ids_seen) == expected
            assert sum(ids_seen.values()) - expected <= 2 * IN_FLIGHT, ids_seen.most_common(3)
            verifier = Webhook(sub["secret"])
            bodies = [verifier.verify(q.body, q.headers) for q in requests]
            # Each aggregate's events in log order (first arrivals; a repeat after a kill
            # is an earlier one sent again, never a later one first).
            versions: dict[str, list[int]] = {}
            for body in bodies:
                mine = versions.setdefault(body["data"]["aggregate_id"], [])
                if body["data"]["aggregate_version"] not in mine:
                    mine.append(body["data"]["aggregate_version"])
            assert all(v == sorted(v) for v in versions.values()), "out of order"
            assert sorted(len(v) for v in versions.values()) == [1] * 20 + [2] * 40
            assert [b["type"] for b in bodies].count("ProductUpdated") >= 40

            def all_delivered() -> bool:
                page = call(
                    system.read, "QueryService", "ListWebhookDeliveries",
                    {"subscriptionId": sub["id"], "status": "WEBHOOK_DELIVERY_STATUS_DELIVERED",
                     "pageSize": 1000},
                )  # fmt: skip
                return len(page.get("deliveries", [])) == expected

            wait_until(all_delivered, 20, "all DELIVERED in ListWebhookDeliveries", system)
            # Paged: 30 at a time, in log order, each once.
            paged: list[str] = []
            token = ""
            while True:
                page = call(
                    system.read, "QueryService", "ListWebhookDeliveries",
                    {"subscriptionId": sub["id"], "pageSize": 30, "pageToken": token},
                )  # fmt: skip
                paged += [d["id"] for d in page["deliveries"]]
                token = page.get("next_page_token", "")
                if not token:
                    break
            assert paged == sorted(set(paged), key=lambda i: int(i.removeprefix("msg_")))
            assert len(paged) == expected
            listed = call(
                system.read, "QueryService", "ListWebhookSubscriptions",
                {"consistency_token": sub["consistency_token"]},
            )  # fmt: skip
            (shown,) = listed["subscriptions"]
            assert shown["id"] == sub["id"] and shown["delivered_deliveries"] == str(expected)
            assert "secret" not in json.dumps(listed)
            history = call(
                system.read, "QueryService", "GetAggregateHistory",
                {"aggregate_type": "AGGREGATE_TYPE_WEBHOOK_SUBSCRIPTION", "aggregate_id": sub["id"]},
            )  # fmt: skip
            assert [e["event_type"] for e in history["events"]] == ["WebhookSubscriptionCreated"]
            assert "whsec_" not in json.dumps(history)  # the secret is never an event field
            status = system.cqrs("projector", "status")
            assert "webhooks:fanout" in status.stdout and "100 delivered" in status.stdout
        finally:
            codes = system.stop_all()
    assert codes["write"] == codes["read"] == 0, system.log_tails()


def test_every_delivery_is_signed_over_the_bytes_sent_with_the_request_id(
    settings: Settings, tmp_path: Path
) -> None:
    """Commands with a request_id through the real write server, so each event carries
    metadata: every delivery's signature verifies (standardwebhooks) against the raw body
    received, and that body names the command's request_id. A body signed without the
    metadata but sent with it (or the reverse) fails here."""
    env = dict(CQRS_WEBHOOKS_ALLOW_PRIVATE="true", CQRS_PROJECTOR_POLL_INTERVAL_MS="100")
    system = System(settings, tmp_path, env)
    with receiver_thread() as r:
        system.start("write")
        system.start("projector")
        try:
            with grpc.insecure_channel(system.write) as channel:
                write = cpb_grpc.CommandServiceStub(channel)
                sub = write.CreateWebhookSubscription(
                    cpb.CreateWebhookSubscriptionRequest(
                        url=r.url("/signed"), request_id="subscribe-1"
                    )
                )
                sent: list[str] = []
                for i in range(4):
                    product = write.CreateProduct(
                        cpb.CreateProductRequest(
                            name=f"p{i}", price_cents=100, currency="EUR", stock=9,
                            request_id=f"create-{i}",
                        )
                    )  # fmt: skip
                    write.UpdateProduct(
                        cpb.UpdateProductRequest(id=product.id, stock=3, request_id=f"update-{i}")
                    )
                    sent += [f"create-{i}", f"update-{i}"]
                write.CreateCustomer(
                    cpb.CreateCustomerRequest(
                        name="Ann", email="ann@example.org", request_id="customer-1"
                    )
                )
                sent.append("customer-1")
            wait_until(lambda: len(r.requests) >= len(sent), 30, "every delivery", system)
            time.sleep(0.3)
            requests = list(r.requests)
            verifier = Webhook(sub.secret)
            bodies = [verifier.verify(q.body, q.headers) for q in requests]
            assert sorted(b["data"]["request_id"] for b in bodies) == sorted(sent)
            for q, body in zip(requests, bodies, strict=True):
                assert json.loads(q.body) == body  # what was verified is what was sent
        finally:
            codes = system.stop_all()
    assert set(codes.values()) == {0}, system.log_tails()
