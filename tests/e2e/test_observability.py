"""The dashboard and the alerts against a real Prometheus scraping a real system.

A Prometheus process (Debian's ``prometheus``) scrapes the three processes under a little
load, with the committed alert rules (deploy/prometheus/alerts.yml); then every PromQL
expression of every panel of deploy/grafana/dashboards/cqrs.json must return data, every
metric an alert rule names must exist, no alert may be pending in the healthy system, and
two incidents must make their alerts pending: a poison event stops two projections, and a
killed read server is a process down.

``CQRS_DASHBOARD_PNG=path`` also renders the panels of the healthy phase to that PNG
(how docs/dashboard.png is made; ``CQRS_OBSERVABILITY_LOAD_S`` lengthens the load).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import re
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest

from common.pb.shop.v1 import command_service_pb2 as cpb
from common.pb.shop.v1 import command_service_pb2_grpc as cpb_grpc
from common.pb.shop.v1 import query_service_pb2 as qpb
from common.pb.shop.v1 import query_service_pb2_grpc as qpb_grpc
from common.settings import Settings
from cqrs import prometheus
from tests.support.events import append_poison_update
from tests.support.servers import free_port
from tests.support.system import System

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        prometheus.binary() is None,
        reason="prometheus is not installed (apt-get install prometheus; .ci/run does)",
    ),
]

LOAD_S = float(os.environ.get("CQRS_OBSERVABILITY_LOAD_S", "8"))
METRIC = re.compile(r"\b(cqrs_[a-z_]+|up)\b")


@dataclasses.dataclass
class Observed:
    system: System
    prometheus: prometheus.Running

    def query(self, expr: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = prometheus.api(
            self.prometheus.url, "/api/v1/query", query=expr
        )["result"]
        return result

    def rules(self) -> list[dict[str, Any]]:
        groups = prometheus.api(self.prometheus.url, "/api/v1/rules")["groups"]
        return [rule for group in groups for rule in group["rules"] if rule["type"] == "alerting"]


@pytest.fixture
def observed(settings: Settings, tmp_path: Path) -> Iterator[Observed]:
    settings = dataclasses.replace(
        settings,
        write_metrics_port=free_port(),
        read_metrics_port=free_port(),
        projector_metrics_port=free_port(),
    )
    system = System(
        settings,
        tmp_path,
        extra_env={
            "CQRS_WRITE_METRICS_PORT": str(settings.write_metrics_port),
            "CQRS_READ_METRICS_PORT": str(settings.read_metrics_port),
            "CQRS_PROJECTOR_METRICS_PORT": str(settings.projector_metrics_port),
        },
    )
    running = prometheus.start(
        prometheus.local_config(settings, interval="1s"), tmp_path / "prometheus", free_port()
    )
    try:
        system.start_all()
        # The load's token-less reads would meet "being built"; asking the read server
        # until they do not would itself count UNAVAILABLE answers (the error-ratio alert
        # then went pending in a "healthy" system when the build was slow).
        system.wait_following(settings.projector_metrics_port)
        yield Observed(system, running)
    finally:
        system.stop_all()
        running.stop()


def test_every_panel_and_alert_works_against_a_real_prometheus(observed: Observed) -> None:
    started = time.time()
    ids = _drive_load(observed.system, LOAD_S)

    # Every panel target returns data once a few scrapes have seen the load.
    targets = prometheus.dashboard_targets()
    assert len(targets) >= 15
    empty = _until_all_answer(observed, [expr for _, _, expr in targets], timeout=60)
    assert not empty, "panel queries without data:\n" + "\n".join(empty)
    if png := os.environ.get("CQRS_DASHBOARD_PNG"):
        from cqrs.dashboard import render

        # Past the first minute, so the 1m rates show the load, not their own ramp.
        begin = started + 60 if LOAD_S > 120 else started
        render(observed.prometheus.url, Path(png), start=begin, end=time.time())

    # Every metric an alert names exists; nothing is pending in a healthy system.
    rules = observed.rules()
    assert {r["name"] for r in rules} >= {
        "CqrsProcessDown",
        "CqrsProjectionStopped",
        "CqrsProjectionLagging",
        "CqrsRpcErrorRatio",
        "CqrsProjectionDrift",
        "CqrsAggregatesParked",
    }
    named = {name for rule in rules for name in METRIC.findall(rule["query"])}
    missing = [name for name in sorted(named) if not observed.query(f"count({name})")]
    assert not missing, f"metrics named by alert rules but not exported: {missing}"
    active = [(r["name"], r["state"]) for r in rules if r["state"] != "inactive"]
    assert not active, f"alerts active in a healthy system: {active}"

    # Incident 1: a poison event stops both product projections.
    _poison_product(observed.system.settings, ids["product"])
    _until(lambda: _alerting(observed, "CqrsProjectionStopped"), 60, "CqrsProjectionStopped")
    stopped = _alerting(observed, "CqrsProjectionStopped")
    assert {a["labels"]["projection"] for a in stopped} == {"redis:products", "pg:products"}
    assert all(a["state"] in ("pending", "firing") for a in stopped)

    # Incident 2: the read server dies.
    observed.system.kill("read")
    _until(lambda: _alerting(observed, "CqrsProcessDown"), 60, "CqrsProcessDown")
    assert [a["labels"]["job"] for a in _alerting(observed, "CqrsProcessDown")] == ["read-server"]


def _drive_load(system: System, seconds: float) -> dict[str, str]:
    """Commands and queries for ``seconds``, some of them failing on the client's side."""
    with grpc.insecure_channel(system.write) as wch, grpc.insecure_channel(system.read) as rch:
        write = cpb_grpc.CommandServiceStub(wch)
        read = qpb_grpc.QueryServiceStub(rch)
        customer = write.CreateCustomer(
            cpb.CreateCustomerRequest(name="Ann", email=f"ann-{uuid.uuid4().hex[:8]}@example.org")
        )
        product = write.CreateProduct(
            cpb.CreateProductRequest(name="Mug", price_cents=1250, currency="EUR", stock=1000000)
        )
        deadline = time.monotonic() + seconds
        n = 0
        while time.monotonic() < deadline:
            n += 1
            order = write.PlaceOrder(
                cpb.PlaceOrderRequest(
                    customer_id=customer.id,
                    items=[cpb.PlaceOrderRequest.Item(product_id=product.id, quantity=1)],
                )
            )
            token = order.consistency_token
            for source in (qpb.SOURCE_PROJECTION, qpb.SOURCE_READ_MODEL, qpb.SOURCE_WRITE_MODEL):
                read.GetOrder(
                    qpb.GetOrderRequest(id=order.id, source=source, consistency_token=token)
                )
            for _ in range(5):  # the near-cache serves repeats
                # With the product's token: the order's token waited for the orders
                # projection only, and the products one may not have the product yet.
                read.GetProduct(
                    qpb.GetProductRequest(
                        id=product.id,
                        source=qpb.SOURCE_PROJECTION,
                        consistency_token=product.consistency_token,
                    )
                )
            read.ListProducts(qpb.ListProductsRequest(page_size=10))
            _expect_error(lambda: read.GetProduct(qpb.GetProductRequest(id=str(uuid.uuid4()))))
            _expect_error(lambda: write.CreateProduct(cpb.CreateProductRequest(name="")))
            time.sleep(0.05)
    assert n > 5
    return {"product": product.id, "customer": customer.id}


def _expect_error(call: Callable[[], object]) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        call()
    assert raised.value.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT)


def _poison_product(settings: Settings, product_id: str) -> None:
    """An update event of ``product_id`` whose payload no reducer accepts."""

    async def append() -> None:
        conn = await asyncpg.connect(settings.asyncpg_dsn)
        try:
            async with conn.transaction():
                await append_poison_update(conn, product_id)
        finally:
            await conn.close()

    asyncio.run(append())


def _alerting(observed: Observed, name: str) -> list[dict[str, Any]]:
    alerts = prometheus.api(observed.prometheus.url, "/api/v1/alerts")["alerts"]
    return [a for a in alerts if a["labels"]["alertname"] == name]


def _until_all_answer(observed: Observed, exprs: list[str], timeout: float) -> list[str]:
    deadline = time.monotonic() + timeout
    pending = list(exprs)
    while pending and time.monotonic() < deadline:
        pending = [expr for expr in pending if not observed.query(expr)]
        if pending:
            time.sleep(1)
    return pending


def _until(check: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what}: not active after {timeout:.0f} s"
        time.sleep(0.5)
