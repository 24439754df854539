"""``cqrs demo`` (``make demo``): the README's story, performed against the running system.

Every call is printed with its request and reply (compact JSON), in the order a newcomer
would make them: a webhook subscription to a receiver of the demo's own, a product and a
customer, an order read back from the three sources with its consistency token, confirmed
and paid, shipped and delivered, its history and its state as of an earlier instant, a
search, the analytics, the webhook deliveries verified against their signatures, and the
order's events on the NATS stream. Names carry the run's time, so the demo can be run again.

A part the system does not have on is skipped with the reason and what turns it on (private
webhook URLs refused, no payments, no NATS relay); any other failure ends the demo with
exit 1 and the failing call.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from common.pb.shop.v1 import command_service_pb2 as cpb
from common.pb.shop.v1 import command_service_pb2_grpc as cpb_grpc
from common.pb.shop.v1 import history_pb2 as hpb
from common.pb.shop.v1 import query_service_pb2 as qpb
from common.pb.shop.v1 import query_service_pb2_grpc as qpb_grpc
from common.pb.shop.v1 import shop_pb2
from common.rpc.tls import call_metadata, channel_credentials
from common.settings import Settings, connect_address

WAIT_S = 20.0
SOURCES = {
    "projection": qpb.SOURCE_PROJECTION,
    "read model": qpb.SOURCE_READ_MODEL,
    "write model": qpb.SOURCE_WRITE_MODEL,
}
_LOCAL_NATS = "nats://127.0.0.1:4222"


class DemoFailed(Exception):
    """A step did not do what the README says it does."""


@dataclass
class Hooks:
    """What the demo's webhook receiver got: (headers, body) per request."""

    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)


async def run(settings: Settings, out: Callable[[str], None] = print) -> int:
    """The walk-through; 0 when every step did what it should (skips included)."""
    credentials = channel_credentials(settings)
    write_at = settings.write_client_address
    read_at = connect_address(settings.read_host, settings.read_port)
    async with _channel(write_at, credentials) as w, _channel(read_at, credentials) as r:
        demo = _Demo(
            cpb_grpc.CommandServiceStub(w),
            qpb_grpc.QueryServiceStub(r),
            tuple(call_metadata(settings)),
            out,
        )
        try:
            await demo.story(settings)
        except DemoFailed as exc:
            out(f"\ndemo FAILED: {exc}")
            return 1
        except grpc.aio.AioRpcError as exc:
            out(f"\ndemo FAILED: {exc.code().name}: {exc.details()}")
            return 1
    out("\ndemo done: every step did what the README says.")
    return 0


@contextlib.asynccontextmanager
async def _channel(
    address: str, credentials: grpc.ChannelCredentials | None
) -> AsyncIterator[grpc.aio.Channel]:
    channel = (
        grpc.aio.insecure_channel(address)
        if credentials is None
        else grpc.aio.secure_channel(address, credentials)
    )
    try:
        yield channel
    finally:
        await channel.close()


class _Demo:
    def __init__(
        self,
        commands: cpb_grpc.CommandServiceStub,
        queries: qpb_grpc.QueryServiceStub,
        metadata: tuple[tuple[str, str], ...],
        out: Callable[[str], None],
    ) -> None:
        self.commands = commands
        self.queries = queries
        self.metadata = metadata
        self.out = out
        self.tag = datetime.now(UTC).strftime("%Y%m%d%H%M%S%f")

    async def call(self, service: str, method: str, request: Message) -> Any:
        """One RPC, printed with its request and reply."""
        stub = self.commands if service == "CommandService" else self.queries
        self.out(f"> {service}/{method} {_json(request)}")
        reply = await getattr(stub, method)(request, metadata=self.metadata, timeout=30)
        self.out(f"< {_json(reply)}")
        return reply

    def step(self, title: str) -> None:
        self.out(f"\n## {title}")

    async def story(self, settings: Settings) -> None:
        hooks = Hooks()
        async with _receiver(hooks) as url:
            self.step("1. A webhook subscription, to a receiver of this demo")
            secret = await self.subscribe(url)
            self.step("2. A product and a customer")
            product = await self.call(
                "CommandService", "CreateProduct",
                cpb.CreateProductRequest(
                    name=f"Demo mug {self.tag}", description="stoneware, 350 ml",
                    price_cents=1299, currency="EUR", category="kitchen", stock=10,
                ),
            )  # fmt: skip
            customer = await self.call(
                "CommandService", "CreateCustomer",
                cpb.CreateCustomerRequest(name="Ann Demo", email=f"ann.{self.tag}@example.org"),
            )  # fmt: skip
            self.step("3. An order, read back from the three sources with its token")
            item = cpb.PlaceOrderRequest.Item(product_id=product.id, quantity=2)
            order = await self.call(
                "CommandService", "PlaceOrder",
                cpb.PlaceOrderRequest(customer_id=customer.id, items=[item]),
            )  # fmt: skip
            placed_at = datetime.now(UTC)
            await self.three_sources(order.id, order.consistency_token)
            self.step("4. Confirmed, paid, shipped, delivered")
            token = await self.settle(order.id)
            self.step("5. Its history, and its state as of before it was confirmed")
            history = await self.call(
                "QueryService", "GetAggregateHistory",
                qpb.GetAggregateHistoryRequest(
                    aggregate_type=hpb.AGGREGATE_TYPE_ORDER, aggregate_id=order.id
                ),
            )  # fmt: skip
            types = [e.event_type for e in history.events]
            _expect("OrderPlaced" in types and "OrderDelivered" in types, f"history {types}")
            as_of = Timestamp()
            as_of.FromDatetime(placed_at)
            then = await self.call(
                "QueryService", "GetOrderAsOf", qpb.GetOrderAsOfRequest(id=order.id, as_of=as_of)
            )
            _expect(then.status == shop_pb2.ORDER_STATUS_PENDING, "as of placing: PENDING")
            self.step("6. Search and analytics (read models, with the token)")
            found = await self.call(
                "QueryService", "SearchProducts",
                qpb.SearchProductsRequest(query=f"mug {self.tag}", consistency_token=token),
            )  # fmt: skip
            _expect([p.id for p in found.products] == [product.id], "the search finds the mug")
            sales = await self.call(
                "QueryService", "GetProductSalesStats",
                qpb.GetProductSalesStatsRequest(product_id=product.id, consistency_token=token),
            )  # fmt: skip
            _expect(sales.units_sold == 2, f"2 units sold, not {sales.units_sold}")
            self.step("7. The webhook deliveries, signatures verified")
            await self.deliveries(hooks, secret, order.id)
        self.step("8. The order's events on the NATS stream")
        await self.on_nats(settings, order.id)

    async def subscribe(self, url: str) -> str | None:
        request = cpb.CreateWebhookSubscriptionRequest(
            url=url, event_types=["OrderPlaced", "OrderDelivered"], description="cqrs demo"
        )
        try:
            reply = await self.call("CommandService", "CreateWebhookSubscription", request)
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.INVALID_ARGUMENT:
                raise
            self.out(
                f"skipped: the write server refuses {url} ({exc.details()}); start the system "
                "with CQRS_WEBHOOKS_ALLOW_PRIVATE=1 to deliver to local receivers"
            )
            return None
        return str(reply.secret)

    async def three_sources(self, order_id: str, token: str) -> None:
        seen = []
        for name, source in SOURCES.items():
            self.out(f"  from the {name}:")
            request = qpb.GetOrderRequest(id=order_id, source=source, consistency_token=token)
            seen.append(await self.call("QueryService", "GetOrder", request))
        _expect(all(o == seen[0] for o in seen), "the three sources answer the same order")
        self.out("  the three sources agree")

    async def settle(self, order_id: str) -> str:
        """Confirm (and wait for the payment, when payments are on), ship, deliver: the last
        command's token."""
        request = cpb.ConfirmOrderRequest(id=order_id)
        await self.call("CommandService", "ConfirmOrder", request)
        status = await self._payment(order_id)
        if status == shop_pb2.PAYMENT_STATUS_UNPAID:
            self.out("payments are off (no CQRS_PAYMENTS_URL): the order ships unpaid")
        else:
            status = await _until(
                lambda: self._payment(order_id),
                lambda s: s != shop_pb2.PAYMENT_STATUS_PENDING,
            )
            _expect(status == shop_pb2.PAYMENT_STATUS_CAPTURED, "the payment is captured")
            self.out("the payment was captured (payments:process charged the provider)")
            await self.call(
                "QueryService", "GetOrder",
                qpb.GetOrderRequest(id=order_id, source=qpb.SOURCE_WRITE_MODEL),
            )  # fmt: skip
        await self.call("CommandService", "ShipOrder", cpb.ShipOrderRequest(id=order_id))
        done = await self.call(
            "CommandService", "DeliverOrder", cpb.DeliverOrderRequest(id=order_id)
        )
        return str(done.consistency_token)

    async def _payment(self, order_id: str) -> int:
        request = qpb.GetOrderRequest(id=order_id, source=qpb.SOURCE_WRITE_MODEL)
        order = await self.queries.GetOrder(request, metadata=self.metadata, timeout=30)
        return int(order.payment_status)

    async def deliveries(self, hooks: Hooks, secret: str | None, order_id: str) -> None:
        if secret is None:
            self.out("skipped (no subscription)")
            return

        async def delivered() -> int:
            await asyncio.wait_for(hooks.arrived.wait(), timeout=WAIT_S)
            hooks.arrived.clear()
            return len(_for_order(hooks, order_id))

        await _until(delivered, lambda n: n >= 2)
        for headers, body in _for_order(hooks, order_id):
            event = json.loads(body)
            _expect(_verified(secret, headers, body), f"{headers['webhook-id']} is signed")
            self.out(
                f"< POST {headers['webhook-id']} {event['type']} "
                f"(webhook-signature verified with the subscription's secret)"
            )

    async def on_nats(self, settings: Settings, order_id: str) -> None:
        import nats

        url = settings.nats_url or _LOCAL_NATS
        try:
            nc = await nats.connect(url, allow_reconnect=False, connect_timeout=2)
        except Exception as exc:
            self.out(f"skipped: no NATS answers at {url} ({type(exc).__name__})")
            return
        try:
            js = nc.jetstream(timeout=5)
            subject = f"{settings.nats_subject_prefix}.Order.OrderDelivered"
            try:
                await js.stream_info(settings.nats_stream)
            except nats.js.errors.NotFoundError:
                self.out(
                    f"skipped: NATS has no stream {settings.nats_stream}: the relay is off "
                    f"(start the system with CQRS_NATS_URL={url})"
                )
                return

            async def last() -> Any:
                try:
                    return await js.get_last_msg(settings.nats_stream, subject)
                except nats.js.errors.NotFoundError:
                    return None

            found = await _until(
                last, lambda m: m is not None and order_id in m.data.decode(), give_up=True
            )
            if found is None:
                self.out(
                    f"skipped: the relay does not publish to {settings.nats_stream} here "
                    f"(start the system with CQRS_NATS_URL={url})"
                )
                return
            self.out(f"< {found.subject} #{found.seq}: {found.data.decode()[:200]}")
        finally:
            await nc.close()


@contextlib.asynccontextmanager
async def _receiver(hooks: Hooks) -> AsyncIterator[str]:
    """An HTTP endpoint on 127.0.0.1 answering 204 to every POST; yields its URL."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")[1:]
            headers = {
                k.strip().lower(): v.strip()
                for k, _, v in (line.partition(":") for line in lines if ":" in line)
            }
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            hooks.received.append((headers, body))
            hooks.arrived.set()
            writer.write(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/hook"
    finally:
        server.close()
        await server.wait_closed()


def _for_order(hooks: Hooks, order_id: str) -> list[tuple[dict[str, str], bytes]]:
    """The distinct deliveries (by webhook-id) about ``order_id``."""
    seen: dict[str, tuple[dict[str, str], bytes]] = {}
    for headers, body in hooks.received:
        if json.loads(body)["data"]["aggregate_id"] == order_id:
            seen.setdefault(headers["webhook-id"], (headers, body))
    return list(seen.values())


def _verified(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """Standard Webhooks: v1 = base64 HMAC-SHA256 of "<id>.<timestamp>.<body>", keyed with
    the secret's bytes (done here as any receiver would, not with the server's code)."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return any(hmac.compare_digest(expected, s) for s in headers["webhook-signature"].split())


async def _until(
    probe: Callable[[], Awaitable[Any]], done: Callable[[Any], bool], give_up: bool = False
) -> Any:
    """``probe()`` again until ``done`` says so (``WAIT_S`` at most): its last answer; past
    the wait, None if ``give_up``, else DemoFailed."""
    deadline = time.monotonic() + WAIT_S
    while True:
        try:
            found = await probe()
        except TimeoutError:
            found = None
        if found is not None and done(found):
            return found
        if time.monotonic() > deadline:
            if give_up:
                return None
            raise DemoFailed(f"waited {WAIT_S:g} s in vain (last: {found!r})")
        await asyncio.sleep(0.2)


def _expect(ok: bool, what: str) -> None:
    if not ok:
        raise DemoFailed(f"expected: {what}")


def _json(message: Message) -> str:
    shown = json_format.MessageToDict(message, preserving_proto_field_name=True)
    if "secret" in shown:
        shown["secret"] = shown["secret"][:10] + "…"  # enough to recognize, not to use
    return json.dumps(shown, separators=(",", ":"), ensure_ascii=False)
