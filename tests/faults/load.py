"""Steady command load and projection read probes for the fault tests.

:class:`CommandLoad` sends commands of every kind at a steady rate and records
every answer; :class:`ReadProbe` reads entities that exist from the projections
back to back and records every answer with its time, so a test can say when reads
stopped and resumed and what they answered meanwhile.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import grpc

from common.pb.shop.v1 import command_service_pb2 as cpb
from common.pb.shop.v1 import command_service_pb2_grpc as cpb_grpc
from common.pb.shop.v1 import query_service_pb2 as qpb
from common.pb.shop.v1 import query_service_pb2_grpc as qpb_grpc

CALL_TIMEOUT_S = 5.0


@dataclass
class Seed:
    """Entities created through the write server before any fault."""

    products: list[str] = field(default_factory=list)
    customers: list[str] = field(default_factory=list)
    orders: list[str] = field(default_factory=list)
    token: str = ""


async def seed(write: cpb_grpc.CommandServiceStub, products: int, customers: int) -> Seed:
    """Products with plenty of stock, customers, and an order per customer."""
    made = Seed()
    for n in range(products):
        reply = await write.CreateProduct(
            cpb.CreateProductRequest(
                name=f"seed {n}", price_cents=100 + n, currency="EUR", category=f"c{n % 4}",
                stock=1_000_000,
            ),
            timeout=CALL_TIMEOUT_S,
        )  # fmt: skip
        made.products.append(reply.id)
    for n in range(customers):
        reply = await write.CreateCustomer(
            cpb.CreateCustomerRequest(
                name=f"seed {n}", email=f"seed{n}-{uuid.uuid4().hex[:6]}@x.org"
            ),
            timeout=CALL_TIMEOUT_S,
        )
        made.customers.append(reply.id)
    for n, customer in enumerate(made.customers):
        items = [
            cpb.PlaceOrderRequest.Item(product_id=made.products[(n + k) % products], quantity=1)
            for k in range(3)
        ]
        reply = await write.PlaceOrder(
            cpb.PlaceOrderRequest(customer_id=customer, items=items), timeout=CALL_TIMEOUT_S
        )
        made.orders.append(reply.id)
        made.token = reply.consistency_token
    return made


async def wait_visible(read: qpb_grpc.QueryServiceStub, token: str, within: float = 60) -> None:
    """Until every source of every entity type has applied ``token``."""
    deadline = time.monotonic() + within
    analytics = (read.ListTopCustomers, qpb.ListTopCustomersRequest(limit=1))  # pg:analytics
    for source in (qpb.SOURCE_PROJECTION, qpb.SOURCE_READ_MODEL):
        calls: list[tuple[Any, Any]] = [
            (read.ListProducts, qpb.ListProductsRequest(page_size=1)),
            (read.ListCustomers, qpb.ListCustomersRequest(page_size=1)),
            (read.ListOrders, qpb.ListOrdersRequest(page_size=1)),
        ]
        if source == qpb.SOURCE_READ_MODEL:
            calls.append(analytics)
        for call, request in calls:
            request.source = source
            request.consistency_token = token
            while True:
                try:
                    await call(request, timeout=5)
                    break
                except grpc.aio.AioRpcError as exc:
                    if exc.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.1)


@dataclass(frozen=True, slots=True)
class Answer:
    at: float  # time.monotonic()
    what: str  # e.g. "products" for a probe, "PlaceOrder" for a command
    code: grpc.StatusCode
    detail: str = ""


class CommandLoad:
    """Commands of every kind at about ``rate`` per second until stopped, from ``workers``
    senders at once (each waits for its reply before its next command).

    Each command carries a ``request_id``; with ``retry`` a command that failed
    UNAVAILABLE is retried with the same id and arguments until it gets another
    answer, so every command ends with one definitive reply.
    """

    def __init__(
        self,
        write: cpb_grpc.CommandServiceStub,
        made: Seed,
        *,
        rate: float = 100,
        retry: bool = False,
        workers: int = 1,
    ) -> None:
        self._write = write
        self._seed = made
        self._workers = workers
        self._interval = workers / rate
        self._retry = retry
        self._rng = random.Random(11)
        self._serial = itertools.count()
        self.answers: list[Answer] = []
        # (method, request, reply) of every command that succeeded, in order.
        self.ok: list[tuple[str, Any, cpb.CommandReply]] = []
        self.products: list[str] = []
        self.orders: list[str] = []
        self.token = made.token

    def codes(self) -> Counter[str]:
        return Counter(a.code.name for a in self.answers)

    async def run(self, stop: asyncio.Event) -> None:
        await asyncio.gather(*(self._send_until(stop) for _ in range(self._workers)))

    async def _send_until(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            started = time.monotonic()
            method, request = self._next()
            await self._send(method, request, stop)
            await asyncio.sleep(max(0.0, self._interval - (time.monotonic() - started)))

    def _next(self) -> tuple[str, Any]:
        n = next(self._serial)
        request_id = f"load-{n}-{uuid.uuid4().hex[:8]}"
        roll = self._rng.random()
        if not self.products or roll < 0.25:
            return "CreateProduct", cpb.CreateProductRequest(
                name=f"p{n}", price_cents=n, currency="EUR", category=f"c{n % 4}", stock=1_000,
                request_id=request_id,
            )  # fmt: skip
        if roll < 0.55:
            picks = [*self._rng.sample(self._seed.products, 2), self._rng.choice(self.products)]
            return "PlaceOrder", cpb.PlaceOrderRequest(
                customer_id=self._rng.choice(self._seed.customers),
                items=[cpb.PlaceOrderRequest.Item(product_id=p, quantity=1) for p in picks],
                request_id=request_id,
            )
        if roll < 0.7 and self.orders:
            order = self.orders.pop(self._rng.randrange(len(self.orders)))
            return "CancelOrder", cpb.CancelOrderRequest(id=order, request_id=request_id)
        if roll < 0.85:
            return "UpdateCustomer", cpb.UpdateCustomerRequest(
                id=self._rng.choice(self._seed.customers), city=f"city {n}", request_id=request_id
            )
        return "UpdateProduct", cpb.UpdateProductRequest(
            id=self._rng.choice(self.products), price_cents=n, request_id=request_id
        )

    async def _send(self, method: str, request: Any, stop: asyncio.Event) -> None:
        while True:
            try:
                reply = await getattr(self._write, method)(request, timeout=CALL_TIMEOUT_S)
            except grpc.aio.AioRpcError as exc:
                self.answers.append(
                    Answer(time.monotonic(), method, exc.code(), exc.details() or "")
                )
                if self._retry and exc.code() == grpc.StatusCode.UNAVAILABLE and not stop.is_set():
                    await asyncio.sleep(0.05)
                    continue
                return
            self.answers.append(Answer(time.monotonic(), method, grpc.StatusCode.OK))
            self.ok.append((method, request, reply))
            if method == "CreateProduct":
                self.products.append(reply.id)
            elif method == "PlaceOrder":
                self.orders.append(reply.id)
            if reply.consistency_token:
                self.token = reply.consistency_token
            return


class ReadProbe:
    """Reads seeded (so existing) products, customers and orders from ``source``,
    back to back, recording every answer."""

    def __init__(
        self, read: qpb_grpc.QueryServiceStub, made: Seed, source: int = qpb.SOURCE_PROJECTION
    ) -> None:
        self._source = source
        self._calls = [
            ("products", read.GetProduct, qpb.GetProductRequest, made.products),
            ("customers", read.GetCustomer, qpb.GetCustomerRequest, made.customers),
            ("orders", read.GetOrder, qpb.GetOrderRequest, made.orders),
        ]
        self.answers: list[Answer] = []

    async def run(self, stop: asyncio.Event) -> None:
        for n in itertools.count():
            if stop.is_set():
                return
            what, call, request_type, ids = self._calls[n % len(self._calls)]
            request = request_type(id=ids[n % len(ids)], source=self._source)
            try:
                await call(request, timeout=2)
                code, detail = grpc.StatusCode.OK, ""
            except grpc.aio.AioRpcError as exc:
                code, detail = exc.code(), exc.details() or ""
                await asyncio.sleep(0.005)  # failures come fast: don't spin
            self.answers.append(Answer(time.monotonic(), what, code, detail))

    def codes(self) -> Counter[str]:
        return Counter(a.code.name for a in self.answers)

    def back_after(self, since: float, until: float | None = None) -> dict[str, float | None]:
        """Per projection: seconds from ``since`` until the first OK read after its last
        failure before ``until`` (``None`` if it never came back)."""
        result: dict[str, float | None] = {}
        end = until if until is not None else float("inf")
        for what, *_ in self._calls:
            mine = [a for a in self.answers if a.what == what and since <= a.at < end]
            failed = [a.at for a in mine if a.code != grpc.StatusCode.OK]
            last_failure = failed[-1] if failed else since
            ok = [a.at for a in mine if a.code == grpc.StatusCode.OK and a.at > last_failure]
            result[what] = (ok[0] - since) if ok else None
        return result
