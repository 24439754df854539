"""Several ``cqrs projector run`` processes sharing the consumers (projector.membership),
the orders projections split into four segments each (projector.segments, a lease each):
three of them each lead a fair share; one is SIGKILLed in the middle of a catch-up and the
others take its consumers within the lease timeout; a fourth joins and the others give
way to it. Nothing is lost or applied twice: ``cqrs projector verify`` is clean and the
three sources answer every list identically."""

from __future__ import annotations

import asyncio
import math
import re
import signal
import time
from pathlib import Path
from typing import Any

import grpc
import pytest

from common.pb.shop.v1 import command_service_pb2 as cpb
from common.pb.shop.v1 import command_service_pb2_grpc as cpb_grpc
from common.pb.shop.v1 import query_service_pb2 as qpb
from common.pb.shop.v1 import query_service_pb2_grpc as qpb_grpc
from common.settings import Settings
from tests.faults.load import wait_visible
from tests.support.projector_health import healthz, led, until
from tests.support.servers import Process, free_port, start
from tests.support.system import System

pytestmark = pytest.mark.e2e

LEASE_TIMEOUT_S = 2.0
SEGMENTS = "redis:orders=4,pg:orders=4"
# Runners: four projections whole, two in four segments, pg:analytics, webhooks:fanout,
# pg:snapshots (no NATS, no payments here).
CONSUMERS = 4 + 2 * 4 + 3


def pages(call: Any, request: Any, within: float = 180) -> list[bytes]:
    """Every item of a list, read page by page; the first page is retried while the
    source has not reached the request's consistency token (UNAVAILABLE)."""
    items: list[bytes] = []
    deadline = time.monotonic() + within
    while True:
        try:
            reply = call(request, timeout=30)
        except grpc.RpcError as exc:
            code = exc.code()  # type: ignore[attr-defined]
            if code != grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline:
                raise
            continue
        field = reply.DESCRIPTOR.fields[0].name  # products / customers / orders
        items += [item.SerializeToString(deterministic=True) for item in getattr(reply, field)]
        if not reply.next_page_token:
            return items
        request.page_token = reply.next_page_token


async def visible(address: str, token: str) -> None:
    async with grpc.aio.insecure_channel(address) as channel:
        await wait_visible(qpb_grpc.QueryServiceStub(channel), token, within=180)


def test_processes_share_the_consumers_survive_a_kill_and_make_room(
    settings: Settings, tmp_path: Path
) -> None:
    system = System(
        settings,
        tmp_path,
        {
            "CQRS_PROJECTOR_LEASE_TIMEOUT_MS": str(int(LEASE_TIMEOUT_S * 1000)),
            "CQRS_PROJECTOR_BATCH_SIZE": "20",  # many batches: the catch-up takes seconds
            "CQRS_PROJECTOR_POLL_INTERVAL_MS": "100",
            "CQRS_PROJECTOR_SEGMENTS": SEGMENTS,
        },
    )
    system.start("write")
    system.start("read")
    ports: dict[str, int] = {}
    victim: str | None = None

    def projector(name: str) -> Process:
        ports[name] = free_port()
        own = {**system.env, "CQRS_PROJECTOR_METRICS_PORT": str(ports[name])}
        process = start(["projector", "run"], own, tmp_path / f"{name}.log")
        system.processes[name] = process
        return process

    def shared_fairly(names: list[str]) -> bool:
        share = math.ceil(CONSUMERS / len(names))
        leads = [led(ports[n]) for n in names]
        every = [c for lead in leads for c in lead]
        return len(every) == len(set(every)) == CONSUMERS and all(len(x) <= share for x in leads)

    try:
        seeded = system.cqrs(
            "seed", "--products", "500", "--customers", "1000", "--orders-per-customer", "3"
        )
        assert seeded.returncode == 0, seeded.stderr
        for name in ("p1", "p2", "p3"):
            projector(name)
        until("shared by three", lambda: shared_fairly(["p1", "p2", "p3"]), 60, system.log_tails)

        # Killed in the middle of the catch-up (20-event batches over ~10,000 events): the
        # process leading a consumer that is still being built.
        def busy(name: str) -> bool:
            _, body = healthz(ports[name])
            return any(
                c["role"] == "leader" and (c["state"] == "rebuilding" or (c["lag_events"] or 0))
                for c in body.get("consumers", {}).values()
            )

        victim = next((n for n in ("p1", "p2", "p3") if busy(n)), None)
        assert victim is not None, f"every consumer caught up already\n{system.log_tails()}"
        system.kill(victim)
        survivors = [n for n in ("p1", "p2", "p3") if n != victim]
        took = until("taken over by two", lambda: shared_fairly(survivors), 30, system.log_tails)
        print(f"\nthe consumers of the killed projector were taken over in {took:.2f} s")

        projector("p4")
        until(
            "made room for a fourth",
            lambda: shared_fairly([*survivors, "p4"]),
            120,  # one being built gives way once built (a build is never thrown away)
            system.log_tails,
        )
        assert any(led(ports["p4"])), "the newcomer leads nothing"
        # `cqrs projector status` names the process leading each consumer or segment.
        status = system.cqrs("projector", "status", timeout=60).stdout
        pids = {str(system.processes[n].proc.pid) for n in [*survivors, "p4"]}
        shown = re.findall(r"^\S+:\S+ .* \S+/(\d+) ", status, re.MULTILINE)
        assert len(shown) == CONSUMERS and set(shown) <= pids, status
        segments = re.findall(r"^(\S+:orders#\d/4) ", status, re.MULTILINE)
        assert len(segments) == 8, status

        with grpc.insecure_channel(system.write) as channel:
            reply = cpb_grpc.CommandServiceStub(channel).CreateProduct(
                cpb.CreateProductRequest(name="last", price_cents=1, currency="EUR", stock=1),
                timeout=30,
            )
        asyncio.run(visible(system.read, reply.consistency_token))  # every consumer built
        with grpc.insecure_channel(system.read) as channel:
            read = qpb_grpc.QueryServiceStub(channel)
            for method, request in (
                ("ListProducts", qpb.ListProductsRequest),
                ("ListCustomers", qpb.ListCustomersRequest),
                ("ListOrders", qpb.ListOrdersRequest),
            ):
                seen = [
                    pages(
                        getattr(read, method),
                        request(
                            page_size=200, source=source, consistency_token=reply.consistency_token
                        ),
                    )
                    for source in (
                        qpb.SOURCE_PROJECTION,
                        qpb.SOURCE_READ_MODEL,
                        qpb.SOURCE_WRITE_MODEL,
                    )
                ]
                assert seen[0], method
                assert seen[0] == seen[1] == seen[2], method
        done = system.cqrs("projector", "verify", timeout=300)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    finally:
        for process in system.processes.values():
            if process.proc.poll() is None:
                process.proc.send_signal(signal.SIGCONT)
        codes = {n: p.stop() for n, p in system.processes.items()}  # each one, always
        codes.pop(victim or "", None)
        assert set(codes.values()) == {0}, f"{codes}\n{system.log_tails()}"
