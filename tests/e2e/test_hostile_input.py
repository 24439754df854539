"""Hostile input against real server processes: every status is a documented one.

Property: every RPC of ``shop.v1.CommandService`` (write server) and
``shop.v1.QueryService`` (read server), plus ``grpc.health.v1.Health/Check`` on
both, answers any request with OK or one of INVALID_ARGUMENT, NOT_FOUND,
ALREADY_EXISTS, FAILED_PRECONDITION, ABORTED, UNAVAILABLE (never UNKNOWN,
INTERNAL, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, ...), and afterwards every
process is still running and both servers' health checks answer SERVING.

The servers, the projector, PostgreSQL and Redis are real and are reached over
real gRPC; nothing is mocked. Hypothesis draws requests field by field from the
protobuf descriptors: each field either plausible (seeded ids, valid tokens,
short text, so that many requests succeed) or hostile (any Unicode including
NUL and other control characters, extreme integers, unknown enum numbers, 0..150
order items with duplicates, mutated and forged page and consistency tokens).
A second property keeps queries valid but for forged tokens, so that those reach
every source; a third sends undecodable bodies: random bytes, mutated
serializations and strings holding lone surrogates (which the Python client
cannot put in a message, so they are encoded by hand). Plain tests pin the exact
statuses of known-dangerous requests; two pin bugs it found
(integer overflows that answered INTERNAL); a last test checks that the projector
digested every hostile-but-valid write (``cqrs projector verify``).

The read server's limits (issue 20) are held to as well: every fuzzed query whose
text field is longer than the write side could store, or whose id is spelled longer
than a UUID can be, is INVALID_ARGUMENT (before any source or cache sees it); a
consistency token from beyond the log's head is never UNAVAILABLE (it was, after the
whole wait); plain tests pin both, and that a history page of large events fits a
default client's 4 MB.
"""

from __future__ import annotations

import base64
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2
from hypothesis import HealthCheck, event, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from common.cursors import MAX_MICROS
from common.field_limits import MAX_TEXT, MAX_UUID_CHARS
from common.pb.shop.v1 import analytics_pb2, history_pb2, shop_pb2
from common.pb.shop.v1 import command_service_pb2 as cpb
from common.pb.shop.v1 import command_service_pb2_grpc as cpb_grpc
from common.pb.shop.v1 import query_service_pb2 as qpb
from common.pb.shop.v1 import query_service_pb2_grpc as qpb_grpc
from common.positions import InvalidToken, decode_token
from common.settings import Settings
from common.webhook_urls import url_problem
from tests.conftest import fresh_settings
from tests.support.hostile_urls import REFUSED as HOSTILE_URLS
from tests.support.servers import (
    ROOT,
    Process,
    env_for,
    field_violations,
    free_port,
    start,
    wait_serving,
)

pytestmark = pytest.mark.e2e

Code = grpc.StatusCode
DOCUMENTED = frozenset(
    {
        Code.OK,
        Code.INVALID_ARGUMENT,
        Code.NOT_FOUND,
        Code.ALREADY_EXISTS,
        Code.FAILED_PRECONDITION,
        Code.ABORTED,
        Code.UNAVAILABLE,
    }
)
SOURCES = (qpb.SOURCE_PROJECTION, qpb.SOURCE_READ_MODEL, qpb.SOURCE_WRITE_MODEL)
INT32 = (-(2**31), 2**31 - 1)
INT64 = (-(2**63), 2**63 - 1)
# A consistency token for a position nobody reached makes the read server wait this
# long before UNAVAILABLE: short, so that such examples do not dominate the runtime.
CONSISTENCY_WAIT_MS = 150
# Generous: a hang (DEADLINE_EXCEEDED) is a failure, but a loaded 2-core CI box is not.
CALL_TIMEOUT_S = 15.0
# How long a Watch stream is given to answer before "open, nothing to say yet" (it errs
# at once on a bad request).
STREAM_OPEN_S = 2.0
CATEGORIES = ("books", "tools", "ünï cödé ☃")

COMMAND_SERVICE = cpb.DESCRIPTOR.services_by_name["CommandService"]
QUERY_SERVICE = qpb.DESCRIPTOR.services_by_name["QueryService"]
HEALTH_CHECK = health_pb2.DESCRIPTOR.services_by_name["Health"].methods_by_name["Check"]


# --------------------------------------------------------------------------- the RPCs


@dataclass(frozen=True)
class Rpc:
    """One unary method of one of the two servers."""

    server: str  # "write" | "read"
    method: MethodDescriptor

    @property
    def path(self) -> str:
        return f"/{self.method.containing_service.full_name}/{self.method.name}"

    @property
    def request_class(self) -> type[Message]:
        cls: type[Message] = message_factory.GetMessageClass(self.method.input_type)
        return cls

    @property
    def response_class(self) -> type[Message]:
        cls: type[Message] = message_factory.GetMessageClass(self.method.output_type)
        return cls

    def __repr__(self) -> str:  # what Hypothesis prints for a drawn Rpc
        return f"Rpc({self.server}: {self.path})"


COMMAND_RPCS = tuple(Rpc("write", m) for m in COMMAND_SERVICE.methods)
QUERY_RPCS = tuple(Rpc("read", m) for m in QUERY_SERVICE.methods)
HEALTH_RPCS = (Rpc("write", HEALTH_CHECK), Rpc("read", HEALTH_CHECK))
ALL_RPCS = COMMAND_RPCS + QUERY_RPCS + HEALTH_RPCS


def outcome(call: Callable[[], object]) -> tuple[grpc.StatusCode, str, object]:
    """The status, details and reply (``None`` on error) of one blocking call."""
    try:
        reply = call()
    except grpc.RpcError as exc:
        return exc.code(), exc.details() or "", exc
    return Code.OK, "", reply


# --------------------------------------------------------------------------- the system


@dataclass
class Server:
    name: str
    address: str
    process: Process
    channel: grpc.Channel

    def health(self) -> str:
        """``SERVING`` when healthy, else the status or the error the check got."""
        check = self.channel.unary_unary(
            "/grpc.health.v1.Health/Check",
            request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            response_deserializer=health_pb2.HealthCheckResponse.FromString,
        )
        code, details, reply = outcome(
            lambda: check(health_pb2.HealthCheckRequest(), timeout=CALL_TIMEOUT_S)
        )
        if not isinstance(reply, health_pb2.HealthCheckResponse):
            return f"check failed: {code.name} {details}"
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


@dataclass(eq=False)
class World:
    """Entities seeded through the write server, and tokens from real replies."""

    products: list[str] = field(default_factory=list)
    customers: list[str] = field(default_factory=list)
    orders: list[str] = field(default_factory=list)
    page_tokens: list[str] = field(default_factory=list)
    consistency_tokens: list[str] = field(default_factory=list)
    # The field strategies over this world, built on first use (see field_table); left
    # out of the repr, which pytest prints with every failure.
    strategies: dict[str, FieldStrategies] = field(default_factory=dict, repr=False)


@dataclass(eq=False)
class System:
    write: Server
    read: Server
    projector: Process
    env: dict[str, str]
    world: World

    def server(self, name: str) -> Server:
        return self.write if name == "write" else self.read

    def typed(self, rpc: Rpc) -> Callable[..., object]:
        """A blocking multicallable that serializes messages and parses the reply (so an
        OK reply that is not a valid response message fails the call)."""
        make = self._stream_first if rpc.method.server_streaming else self._unary
        return make(
            rpc.server,
            rpc.path,
            request_serializer=rpc.request_class.SerializeToString,
            response_deserializer=rpc.response_class.FromString,
        )

    def raw(self, rpc: Rpc) -> Callable[..., object]:
        """A blocking multicallable taking and returning bytes (no serializer)."""
        make = self._stream_first if rpc.method.server_streaming else self._unary
        return make(rpc.server, rpc.path)

    def _unary(self, server: str, path: str, **codec: Any) -> Callable[..., object]:
        return self.server(server).channel.unary_unary(path, **codec)  # type: ignore[no-any-return]

    def _stream_first(self, server: str, path: str, **codec: Any) -> Callable[..., object]:
        """A Watch stream called like a unary method: its first message, or its error. A
        stream still open with nothing to say (no change yet) after ``STREAM_OPEN_S`` is
        a healthy answer (``None``), not a hang."""
        multi = self.server(server).channel.unary_stream(path, **codec)

        def call(request: object, timeout: float | None = None, **kw: Any) -> object:
            stream = multi(request, timeout=min(timeout or STREAM_OPEN_S, STREAM_OPEN_S), **kw)
            try:
                return next(iter(stream), None)
            except grpc.RpcError as exc:
                if exc.code() == Code.DEADLINE_EXCEEDED:
                    return None
                raise
            finally:
                stream.cancel()

        return call

    def logs(self) -> str:
        return "\n".join(
            f"--- {name} log (tail) ---\n{process.log()[-4000:]}"
            for name, process in (
                ("write-server", self.write.process),
                ("read-server", self.read.process),
                ("projector", self.projector),
            )
        )

    def assert_up(self) -> None:
        """Every process still runs and both servers answer health checks with SERVING."""
        for name, process in (
            ("write-server", self.write.process),
            ("read-server", self.read.process),
            ("projector", self.projector),
        ):
            code = process.proc.poll()
            assert code is None, f"{name} exited with {code}\n{self.logs()}"
        for server in (self.write, self.read):
            status = server.health()
            assert status == "SERVING", f"{server.name} health: {status}\n{self.logs()}"

    def check(self, rpc: Rpc, code: grpc.StatusCode, details: str, request: object) -> None:
        """The answer is a documented status and the system is still up."""
        shown = repr(request)
        if len(shown) > 600:
            shown = shown[:600] + "…"
        assert code in DOCUMENTED, (
            f"{rpc.path} answered {code.name} ({details!r}) to {shown}\n{self.logs()}"
        )
        self.assert_up()


@pytest.fixture(scope="module")
async def module_settings(template_database: str) -> AsyncIterator[Settings]:
    """Like the ``settings`` fixture, for the whole module: starting three processes
    and seeding once keeps the module fast. The short consistency wait bounds how long
    a forged far-future token holds a request (see CONSISTENCY_WAIT_MS)."""
    async with fresh_settings(template_database, consistency_wait_max_ms=CONSISTENCY_WAIT_MS) as s:
        yield s


@pytest.fixture(scope="module")
def system(module_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    """Write server, read server and projector as real processes, with a seeded world
    whose projections are built; each must exit 0 on SIGTERM afterwards."""
    tmp = tmp_path_factory.mktemp("hostile")
    write_port, read_port = free_port(), free_port()
    env = env_for(module_settings, CQRS_WRITE_PORT=str(write_port), CQRS_READ_PORT=str(read_port))
    processes = {
        "write": start(["write-server"], env, tmp / "write.log"),
        "read": start(["read-server"], env, tmp / "read.log"),
        "projector": start(["projector", "run"], env, tmp / "projector.log"),
    }
    channels: list[grpc.Channel] = []
    try:
        servers: dict[str, Server] = {}
        for name, port in (("write", write_port), ("read", read_port)):
            address = f"127.0.0.1:{port}"
            wait_serving(address, processes[name])
            channel = grpc.insecure_channel(address)
            channels.append(channel)
            servers[name] = Server(f"{name}-server", address, processes[name], channel)
        built = System(servers["write"], servers["read"], processes["projector"], env, World())
        _seed(built)
        yield built
    finally:
        for channel in channels:
            channel.close()
        codes = {name: process.stop() for name, process in processes.items()}
        logs = "\n".join(f"--- {n} ---\n{p.log()[-3000:]}" for n, p in processes.items())
        assert codes == {"write": 0, "read": 0, "projector": 0}, f"{codes}\n{logs}"


def _seed(system: System) -> None:
    """A few products, customers and orders in every status, real page tokens, and
    projections caught up with all of it, so fuzzed requests also take success paths."""
    world = system.world
    command = cpb_grpc.CommandServiceStub(system.write.channel)
    query = qpb_grpc.QueryServiceStub(system.read.channel)
    for i in range(6):
        reply = command.CreateProduct(
            cpb.CreateProductRequest(
                name=f"seed product {i}",
                price_cents=100 + i,
                currency="USD" if i == 5 else "EUR",
                category=CATEGORIES[i % len(CATEGORIES)],
                stock=100_000,
            ),
            timeout=CALL_TIMEOUT_S,
        )
        world.products.append(reply.id)
        world.consistency_tokens.append(reply.consistency_token)
    for i in range(3):
        reply = command.CreateCustomer(
            cpb.CreateCustomerRequest(name=f"seed customer {i}", email=f"seed{i}@example.org"),
            timeout=CALL_TIMEOUT_S,
        )
        world.customers.append(reply.id)
    # One order per status, each with its own products (the USD one stays out).
    confirm = (command.ConfirmOrder, cpb.ConfirmOrderRequest)
    ship = (command.ShipOrder, cpb.ShipOrderRequest)
    deliver = (command.DeliverOrder, cpb.DeliverOrderRequest)
    cancel = (command.CancelOrder, cpb.CancelOrderRequest)
    steps: list[list[tuple[Callable[..., Any], type[Message]]]] = [
        [],
        [confirm],
        [confirm, ship],
        [confirm, ship, deliver],
        [cancel],
    ]
    for i, transitions in enumerate(steps):
        reply = command.PlaceOrder(
            cpb.PlaceOrderRequest(
                customer_id=world.customers[i % len(world.customers)],
                items=[
                    cpb.PlaceOrderRequest.Item(product_id=world.products[i % 5], quantity=2),
                    cpb.PlaceOrderRequest.Item(product_id=world.products[(i + 1) % 5], quantity=1),
                ],
            ),
            timeout=CALL_TIMEOUT_S,
        )
        world.orders.append(reply.id)
        world.consistency_tokens.append(reply.consistency_token)
        for call, request_class in transitions:
            reply = call(request_class(id=reply.id), timeout=CALL_TIMEOUT_S)
            world.consistency_tokens.append(reply.consistency_token)
    latest = world.consistency_tokens[-1]
    _wait_projected(system, latest)
    # Real page tokens (every source issues the same ones), of every list and filter.
    lists: list[tuple[Callable[..., Any], Message]] = [
        (query.ListProducts, qpb.ListProductsRequest(page_size=1)),
        (query.ListProducts, qpb.ListProductsRequest(page_size=1, category=CATEGORIES[0])),
        (query.ListCustomers, qpb.ListCustomersRequest(page_size=1)),
        (query.ListOrders, qpb.ListOrdersRequest(page_size=1)),
        (query.ListOrders, qpb.ListOrdersRequest(page_size=1, customer_id=world.customers[0])),
    ]
    for call, request in lists:
        reply = call(request, timeout=CALL_TIMEOUT_S)
        assert reply.next_page_token, request
        world.page_tokens.append(reply.next_page_token)


def _wait_projected(system: System, token: str, timeout_s: float = 60) -> None:
    """Until SOURCE_PROJECTION and SOURCE_READ_MODEL answer every list at ``token``
    (UNAVAILABLE meanwhile: being built, or behind)."""
    query = qpb_grpc.QueryServiceStub(system.read.channel)
    deadline = time.monotonic() + timeout_s
    for source in (qpb.SOURCE_PROJECTION, qpb.SOURCE_READ_MODEL):
        for call, request in (
            (query.ListProducts, qpb.ListProductsRequest(source=source, consistency_token=token)),
            (query.ListCustomers, qpb.ListCustomersRequest(source=source, consistency_token=token)),
            (query.ListOrders, qpb.ListOrdersRequest(source=source, consistency_token=token)),
            # pg:analytics (read model only; SOURCE_PROJECTION is refused there)
            (query.ListTopCustomers, qpb.ListTopCustomersRequest(consistency_token=token)),
        ):
            while True:
                code, details, _ = outcome(lambda c=call, r=request: c(r, timeout=CALL_TIMEOUT_S))
                if code == Code.OK:
                    break
                assert code == Code.UNAVAILABLE, f"{code.name}: {details}\n{system.logs()}"
                assert time.monotonic() < deadline, f"not projected: {details}\n{system.logs()}"
                time.sleep(0.05)


# --------------------------------------------------------------------------- strategies

# Any code point UTF-8 can encode (lone surrogates cannot: see surrogate_bodies).
any_char = st.characters(codec="utf-8")
control_char = st.characters(codec="utf-8", categories=["Cc", "Cf", "Zl", "Zp", "Zs", "Mn"])
hostile_text = st.one_of(
    st.text(any_char, max_size=30),
    st.text(control_char, max_size=10),  # NUL is Cc: the most common control here
    st.sampled_from(
        [
            "",
            " ",
            "\t\n",
            "\x00",
            "a\x00b",
            "\x00" * 5,
            "\x7f\x1b[31m",
            "\u202e\u2066",
            "\ufeff",
            "\U0001f4a9" * 3,
            "Ω" * 200,
            "x" * 201,
            "x" * 5000,
            "x" * 5001,
            "%s%n{0}",
            "' OR 1=1 --",
            "*",
            "?",
            "[a-z]",
            ":",
            "idx:all",
            "\\",
            "../../",
        ]
    ),
    # Around and far beyond the length limits (200 and 5000 characters).
    st.builds(lambda c, n: c * n, any_char, st.integers(195, 20_000)),
)
plausible_text = st.text("abcdefghij klmnopqrstuvwxyz", min_size=1, max_size=12)


def extreme_ints(lo: int, hi: int, *interesting: int) -> st.SearchStrategy[int]:
    """Bounds, values around 0 and ``interesting`` ones (near the valid range), or any."""
    special = sorted({lo, lo + 1, hi - 1, hi, -1, 0, 1, *interesting})
    return st.one_of(st.sampled_from(special), st.integers(lo, hi))


def enum_numbers(values: list[int]) -> st.SearchStrategy[int]:
    """Known and unknown numbers of an open (proto3) enum."""
    return st.one_of(st.sampled_from([-1, len(values), 2**31 - 1, -(2**31)]), st.integers(*INT32))


# Unicode digits that int() parses like ASCII ones (U+FF10..U+FF19).
FULLWIDTH_DIGITS = {ord(d): chr(0xFF10 + int(d)) for d in "0123456789"}


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def out_of_range_page_token(timestamp_hex: str, ident: str) -> str:
    """A page token in the issued format whose microseconds no datetime can hold."""
    return b64(f"{timestamp_hex}|{ident}".encode())


MUTATIONS: dict[str, Callable[[str, int, str], str]] = {
    "truncate": lambda t, i, c: t[: i % (len(t) + 1)],
    "replace": lambda t, i, c: t[: i % len(t)] + c + t[i % len(t) + 1 :] if t else c,
    "insert": lambda t, i, c: t[: i % (len(t) + 1)] + c + t[i % (len(t) + 1) :],
    "delete": lambda t, i, c: t[: i % len(t)] + t[i % len(t) + 1 :] if t else t,
    "pad": lambda t, i, c: t + "=" * (1 + i % 3),
    "upper": lambda t, i, c: t.upper(),
    "lower": lambda t, i, c: t.lower(),
    "std_alphabet": lambda t, i, c: t.replace("-", "+").replace("_", "/"),
    "double": lambda t, i, c: t + t,
    "reverse": lambda t, i, c: t[::-1],
    "spaces": lambda t, i, c: f" {t}\n",
}


def mutated(tokens: list[str]) -> st.SearchStrategy[str]:
    return st.builds(
        lambda token, name, i, c: MUTATIONS[name](token, i, c),
        st.sampled_from(tokens),
        st.sampled_from(sorted(MUTATIONS)),
        st.integers(0, 200),
        st.one_of(st.sampled_from("AaZz09-_=+/|.\x00"), any_char),
    )


def weighted(*choices: tuple[int, st.SearchStrategy[str]]) -> st.SearchStrategy[str]:
    """One of the strategies, picked in proportion to its weight (``one_of`` would
    flatten nested ``one_of`` branches and so weigh each of them as much)."""
    return st.sampled_from([s for weight, s in choices for _ in range(weight)]).flatmap(
        lambda chosen: chosen
    )


def page_tokens(world: World) -> st.SearchStrategy[str]:
    # Hypothesis favours small integers: ask for the range no datetime holds explicitly.
    members = st.one_of(
        st.sampled_from([0, 1, MAX_MICROS, MAX_MICROS + 1, 2**63 - 1, 2**64 - 1]),
        st.integers(0, MAX_MICROS),
        st.integers(MAX_MICROS + 1, 2**64 - 1),
    )
    idents = st.one_of(
        st.sampled_from(world.products + world.customers + world.orders), st.uuids().map(str)
    )
    return weighted(
        # The issued format with any time (past, future, beyond year 9999) and any id:
        # these pass the syntax checks and reach the sources.
        (4, st.builds(lambda us, ident: b64(f"{us:016x}|{ident}".encode()), members, idents)),
        (
            2,
            st.builds(
                out_of_range_page_token,
                st.sampled_from(["ffffffffffffffff", "7fffffffffffffff"]),
                idents,
            ),
        ),
        (3, mutated(world.page_tokens)),
        # Almost the format: upper-case hex, short or long timestamps, no separator.
        (1, st.builds(lambda us, ident: b64(f"{us:X}|{ident}".encode()), members, idents)),
        (1, st.builds(lambda us, ident: b64(f"{us:x}{ident}".encode()), members, idents)),
        (1, st.binary(max_size=80).map(b64)),
        (1, st.binary(max_size=80).map(lambda raw: base64.b64encode(raw).decode())),
        (2, hostile_text),
    )


def consistency_tokens(world: World) -> st.SearchStrategy[str]:
    numbers = st.one_of(
        st.sampled_from([0, 1, 2**63 - 1, 2**63, 2**64 - 1, 2**64]),
        st.integers(0, 2**63 - 1),
        st.integers(2**63, 2**70),
    )
    return weighted(
        (3, mutated(world.consistency_tokens)),
        # The issued format with any numbers: past (OK), beyond the log's head or beyond
        # a bigint (both INVALID_ARGUMENT).
        (3, st.builds(lambda x, s: f"c1.{x:x}.{s:x}", numbers, numbers)),
        (1, st.builds(lambda n, d: f"c1.{d * n}.1", st.integers(17, 5000), st.sampled_from("f01"))),
        (
            2,
            st.sampled_from(
                ["c1.-1.2", "c1.0x1.2", "c1.1", "c1..", "c1.1.2.3", "c2.1.2", "C1.1.2", "c1.01.2",
                 "c1.1.02", "c1.A.1", "c1.1.2".translate(FULLWIDTH_DIGITS), "c1.+1.2", "c1. 1.2",
                 "c1.1.2 ", "c1.1_0.2", "c1."]
            ),
        ),
        (2, hostile_text),
    )  # fmt: skip


def ids(real: list[str]) -> st.SearchStrategy[str]:
    """Real ids in every spelling ``uuid.UUID`` accepts, and ids that are not UUIDs."""
    return st.one_of(
        st.sampled_from(real).map(str.upper),
        st.sampled_from(real).map(lambda i: "{" + i + "}"),
        st.sampled_from(real).map(lambda i: "urn:uuid:" + i),
        st.sampled_from(real).map(lambda i: i.replace("-", "")),
        st.sampled_from(real).map(lambda i: i.translate(FULLWIDTH_DIGITS)),
        st.sampled_from(real).map(lambda i: i[:-1]),
        st.uuids().map(str),
        st.just(str(uuid.UUID(int=0))),
        hostile_text,
    )


@dataclass(frozen=True)
class FieldStrategies:
    plausible: st.SearchStrategy[Any]
    hostile: st.SearchStrategy[Any]


def field_table(world: World) -> dict[str, FieldStrategies]:
    """Per request field name, across both services and health: strategies for a
    plausible value and for a hostile one. No default on purpose: a new field must
    get strategies here (KeyError otherwise)."""
    if not world.strategies:
        world.strategies.update(_field_table(world))
    return world.strategies


def _field_table(world: World) -> dict[str, FieldStrategies]:
    every = world.products + world.customers + world.orders
    text = FieldStrategies(plausible_text, hostile_text)

    def entity(real: list[str]) -> FieldStrategies:
        return FieldStrategies(st.sampled_from(real), ids(every))

    valid_sources = list(qpb.Source.values())
    valid_aggregate_types = list(history_pb2.AggregateType.values())
    valid_rankings = list(analytics_pb2.TopProductsBy.values())
    months = st.one_of(
        st.sampled_from(["2026-13", "2026-00", "0000-01", "9999-12", "26-01", "2026-1", "2026-01\n",
                         "2026\u201301", "2026-01".translate(FULLWIDTH_DIGITS)]),
        hostile_text,
    )  # fmt: skip
    valid_statuses = list(shop_pb2.OrderStatus.values())
    item = message_strategy(cpb.PlaceOrderRequest.Item, world)
    item_class = cpb.PlaceOrderRequest.Item
    return {
        "name": text,
        "description": text,
        "address": text,
        "city": text,
        "postal_code": text,
        "country": text,
        "category": FieldStrategies(st.sampled_from(CATEGORIES), hostile_text),
        "currency": FieldStrategies(
            st.sampled_from(["EUR", "USD"]),
            st.one_of(st.sampled_from(["eur", "XXX", "EU", "EURO", "€", " EUR"]), hostile_text),
        ),
        "email": FieldStrategies(
            st.integers(0, 10**12).map(lambda n: f"fuzz{n}@example.org"),
            st.one_of(
                st.sampled_from(["SEED0@EXAMPLE.ORG", " seed1@example.org ", "a@b", "@.", "x@y.z"]),
                st.builds(lambda s: f"{s}@example.org", hostile_text),
                hostile_text,
            ),
        ),
        "price_cents": FieldStrategies(
            st.integers(0, 100_000), extreme_ints(*INT64, 10**13, 10**13 + 1)
        ),
        "stock": FieldStrategies(st.integers(0, 1000), extreme_ints(*INT32)),
        "quantity": FieldStrategies(st.integers(1, 3), extreme_ints(*INT32, 10_000, 10_001)),
        "expected_version": FieldStrategies(st.just(0), extreme_ints(*INT64, 2, 3)),
        "request_id": FieldStrategies(
            st.just(""),
            st.one_of(
                # Reused keys: the same command replays, a different one is refused.
                st.sampled_from(["dup-1", "dup-2", "r" * 128, "r" * 129]),
                hostile_text,
            ),
        ),
        "id": entity(every),  # narrowed to the message's entity in message_strategy
        "customer_id": FieldStrategies(
            st.one_of(st.just(""), st.sampled_from(world.customers)), ids(every)
        ),
        "product_id": entity(world.products[:5]),  # all EUR: a plausible order succeeds
        "items": FieldStrategies(
            st.lists(st.sampled_from(world.products[:5]), min_size=1, max_size=3, unique=True).map(
                lambda ps: [item_class(product_id=p, quantity=1) for p in ps]
            ),
            st.one_of(
                st.lists(item, max_size=150),
                # Many lines of one (real or not) product: duplicates, and past the limit.
                st.builds(
                    lambda i, n: [i] * n,
                    item,
                    st.sampled_from([0, 1, 2, 20, 21, 99, 100, 101, 150]),
                ),
            ),
        ),
        "page_size": FieldStrategies(st.integers(0, 5), extreme_ints(*INT32, 1000, 1001)),
        "page_token": FieldStrategies(
            st.one_of(st.just(""), st.sampled_from(world.page_tokens)), page_tokens(world)
        ),
        "consistency_token": FieldStrategies(
            st.one_of(st.just(""), st.sampled_from(world.consistency_tokens)),
            consistency_tokens(world),
        ),
        "source": FieldStrategies(st.sampled_from(valid_sources), enum_numbers(valid_sources)),
        # Watch streams: a position is a consistency token.
        "resume_after": FieldStrategies(
            st.one_of(st.just(""), st.sampled_from(world.consistency_tokens)),
            consistency_tokens(world),
        ),
        # Event history and time travel.
        "aggregate_type": FieldStrategies(
            st.sampled_from(valid_aggregate_types), enum_numbers(valid_aggregate_types)
        ),
        "aggregate_id": entity(every),
        "as_of": FieldStrategies(
            st.integers(1_700_000_000, 1_900_000_000).map(lambda s: Timestamp(seconds=s)),
            st.builds(
                lambda s, n: Timestamp(seconds=s, nanos=n),
                extreme_ints(*INT64, -62135596801, 253402300800),
                extreme_ints(*INT32, 999_999_999, 1_000_000_000),
            ),
        ),
        # Analytics.
        "by": FieldStrategies(st.sampled_from(valid_rankings), enum_numbers(valid_rankings)),
        "limit": FieldStrategies(st.integers(0, 10), extreme_ints(*INT32, 100, 101)),
        "from_month": FieldStrategies(st.sampled_from(["2026-01", "2000-01"]), months),
        "to_month": FieldStrategies(st.sampled_from(["2026-12", "2030-12"]), months),
        # Search.
        "query": FieldStrategies(plausible_text, hostile_text),
        "status": FieldStrategies(st.sampled_from(valid_statuses), enum_numbers(valid_statuses)),
        # Webhooks. No URL here can pass the guard (this system does not set
        # CQRS_WEBHOOKS_ALLOW_PRIVATE): a subscription the fuzzer made would be delivered to,
        # and this machine may only send traffic to itself.
        # Every hostile URL is one the guard refuses (tests/unit/test_webhook_urls.py holds
        # each to it): internal addresses in every spelling, what the client cannot send.
        # Random text is kept off http(s):// so that it cannot become a deliverable URL.
        "url": FieldStrategies(
            st.sampled_from(["http://127.0.0.1:9/hook", "http://[::1]:9/hook"]),
            st.one_of(
                st.sampled_from(
                    [
                        "ftp://127.0.0.1/x",
                        "http://10.0.0.1/",
                        "http://u:p@127.0.0.1/",
                        "http:///x",
                        "http://127.0.0.1:0/",
                        "http://localhost/" + "x" * 3000,
                        *sorted(HOSTILE_URLS),
                    ]
                ),
                hostile_text.filter(lambda u: "http" not in u.lower()),
            ),
        ),
        "event_types": FieldStrategies(
            st.lists(st.sampled_from(["OrderPlaced", "ProductCreated"]), max_size=2, unique=True),
            st.lists(
                st.one_of(
                    st.sampled_from(["OrderPlaced", "WebhookSecretRotated", ""]), hostile_text
                ),
                max_size=30,
            ),
        ),
        "subscription_id": entity(every),
        # RecordPaymentResult (internal, but it must survive anything too).
        "order_id": entity(world.orders),
        "outcome": FieldStrategies(
            st.sampled_from(list(cpb.PaymentOutcome.values())),
            enum_numbers(list(cpb.PaymentOutcome.values())),
        ),
        "provider_charge_id": FieldStrategies(st.sampled_from(["ch_1", "ch_2"]), hostile_text),
        "provider_refund_id": FieldStrategies(st.sampled_from(["re_1", ""]), hostile_text),
        "amount_cents": FieldStrategies(st.integers(0, 100_000), extreme_ints(*INT64)),
        "reason": text,
        "retryable": FieldStrategies(st.booleans(), st.booleans()),
        # grpc.health.v1.HealthCheckRequest
        "service": FieldStrategies(
            st.sampled_from(["", COMMAND_SERVICE.full_name, QUERY_SERVICE.full_name]),
            hostile_text,
        ),
    }


def _entity_ids(message: Descriptor, world: World) -> list[str]:
    """The seeded ids an ``id`` field of ``message`` plausibly names."""
    for kind, real in (("Product", world.products), ("Customer", world.customers)):
        if kind in message.name:
            return real
    return world.orders


@st.composite
def _message(draw: st.DrawFn, cls: type[Message], world: World) -> Message:
    """Each field plausible or hostile (Hypothesis shrinks towards all plausible);
    ``optional`` fields may be absent."""
    table = field_table(world)
    fields = cls.DESCRIPTOR.fields
    names = st.sampled_from([f.name for f in fields])
    # Mostly one or two hostile fields: servers reject a request for its first bad
    # field or for all of them at once, so more would mostly hide the deeper paths.
    hostile = draw(
        st.one_of(st.sets(names, max_size=1), st.sets(names, max_size=2), st.sets(names)),
        label="hostile fields",
    )
    values: dict[str, Any] = {}
    for f in fields:
        strategies = table[f.name]
        plausible = strategies.plausible
        if f.name == "id":
            plausible = st.sampled_from(_entity_ids(cls.DESCRIPTOR, world))
        value = draw(strategies.hostile if f.name in hostile else plausible, label=f.name)
        if f.has_presence and f.message_type is None and draw(st.booleans(), label="absent"):
            continue
        values[f.name] = value
    return cls(**values)


def message_strategy(cls: type[Message], world: World) -> st.SearchStrategy[Message]:
    # Deferred: PlaceOrderRequest.Item's strategy is made while the table is being built.
    return st.deferred(lambda: _message(cls, world))


@st.composite
def rpc_requests(draw: st.DrawFn, rpcs: tuple[Rpc, ...], world: World) -> tuple[Rpc, Message]:
    rpc = draw(st.sampled_from(rpcs), label="rpc")
    return rpc, draw(message_strategy(rpc.request_class, world), label="request")


# ------------------------------------------------------------ raw (undecodable) bodies


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        out.append(low | (0x80 if n else 0))
        if not n:
            return bytes(out)


def length_delimited(number: int, payload: bytes) -> bytes:
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def first_string_field(message: Descriptor) -> FieldDescriptor:
    return next(f for f in message.fields if f.type == FieldDescriptor.TYPE_STRING)


@st.composite
def mutated_bytes(draw: st.DrawFn, data: bytes) -> bytes:
    """``data`` truncated, with bits flipped, or bytes inserted or deleted."""
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["truncate", "flip", "insert", "delete", "append"]))
        at = draw(st.integers(0, len(data)))
        if kind == "truncate":
            data = data[:at]
        elif kind == "flip" and data:
            at %= len(data)
            data = data[:at] + bytes([data[at] ^ (1 << draw(st.integers(0, 7)))]) + data[at + 1 :]
        elif kind == "insert":
            data = data[:at] + draw(st.binary(min_size=1, max_size=8)) + data[at:]
        elif kind == "delete":
            data = data[:at] + data[at + 1 :]
        else:
            data += draw(st.binary(min_size=1, max_size=16))
    return data


@st.composite
def surrogate_bodies(draw: st.DrawFn, rpc: Rpc, world: World) -> bytes:
    """A valid request plus a string field holding lone surrogates, UTF-8 encoded the way
    the Python client refuses to (``surrogatepass``): invalid UTF-8 on the wire."""
    base = draw(message_strategy(rpc.request_class, world)).SerializeToString()
    strings = [
        f for f in rpc.request_class.DESCRIPTOR.fields if f.type == FieldDescriptor.TYPE_STRING
    ]
    target = draw(st.sampled_from(strings))
    text = draw(st.text(st.one_of(any_char, st.characters(categories=["Cs"])), max_size=10))
    text += draw(st.characters(categories=["Cs"]))
    payload = text.encode("utf-8", "surrogatepass")
    return base + length_delimited(target.number, payload)


@st.composite
def raw_requests(draw: st.DrawFn, world: World) -> tuple[Rpc, bytes]:
    rpc = draw(st.sampled_from(ALL_RPCS), label="rpc")
    valid = message_strategy(rpc.request_class, world).map(lambda m: m.SerializeToString())
    body = draw(
        st.one_of(
            st.binary(max_size=300),
            valid.flatmap(mutated_bytes),
            surrogate_bodies(rpc, world),
        ),
        label="body",
    )
    return rpc, body


# --------------------------------------------------------------------------- properties

# Each property records event("<server> <method>: <status>"): run with
# --hypothesis-show-statistics to see how often each status (OK included) came back.
FUZZ = hsettings(
    max_examples=150,
    deadline=None,
    database=None,  # no .hypothesis directory; a failure prints its example
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@hsettings(max_examples=500, deadline=None, database=None)
@given(data=st.data())
def test_no_fuzzed_url_passes_the_webhook_guard(data: st.DataObject) -> None:
    """The fuzzer's webhook URLs, plausible or hostile, never make a deliverable
    subscription (this system does not allow private addresses): nothing it subscribes
    is sent anywhere. No servers needed."""
    world = World(products=[str(uuid.uuid4())], customers=[str(uuid.uuid4())])
    urls = field_table(world)["url"]
    url = data.draw(st.one_of(urls.plausible, urls.hostile), label="url")
    assert url_problem(url, allow_private=False) is not None, url


@FUZZ
@given(data=st.data())
def test_command_service_answers_only_documented_statuses(
    system: System, data: st.DataObject
) -> None:
    """Any request to any CommandService method: a documented status, servers up."""
    rpc, request = data.draw(rpc_requests(COMMAND_RPCS + HEALTH_RPCS[:1], system.world))
    code, details, _ = outcome(lambda: system.typed(rpc)(request, timeout=CALL_TIMEOUT_S))
    event(f"{rpc.server} {rpc.method.name}: {code.name}")
    system.check(rpc, code, details, request)


@FUZZ
@given(data=st.data())
def test_query_service_answers_only_documented_statuses(
    system: System, data: st.DataObject
) -> None:
    """Any request to any QueryService method: a documented status, servers up."""
    rpc, request = data.draw(rpc_requests(QUERY_RPCS + HEALTH_RPCS[1:], system.world))
    code, details, _ = outcome(lambda: system.typed(rpc)(request, timeout=CALL_TIMEOUT_S))
    event(f"{rpc.server} {rpc.method.name}: {code.name}")
    system.check(rpc, code, details, request)
    check_read_limits(rpc, request, code, details)


@st.composite
def forged_token_requests(draw: st.DrawFn, world: World) -> tuple[Rpc, Message]:
    """A query that is valid but for its page token, its consistency token or both
    (forged or mutated), on any valid source: so the tokens reach every source."""
    rpc = draw(st.sampled_from(QUERY_RPCS), label="rpc")
    fields = rpc.request_class.DESCRIPTOR.fields_by_name
    table = field_table(world)
    values: dict[str, Any] = {}
    if "source" in fields:
        values["source"] = draw(st.sampled_from([0, *SOURCES]), label="source")
    if "id" in fields:
        values["id"] = draw(st.sampled_from(_entity_ids(rpc.request_class.DESCRIPTOR, world)))
    forged = draw(st.sampled_from(["page_token", "consistency_token", "both"]), label="forged")
    for name in ("page_token", "consistency_token"):
        if name in fields:
            strategies = table[name]
            chosen = strategies.hostile if forged in (name, "both") else strategies.plausible
            values[name] = draw(chosen, label=name)
    return rpc, rpc.request_class(**values)


@FUZZ
@given(data=st.data())
def test_forged_tokens_answer_only_documented_statuses(system: System, data: st.DataObject) -> None:
    """Page and consistency tokens, forged or mutated, on every source and method."""
    rpc, request = data.draw(forged_token_requests(system.world))
    code, details, _ = outcome(lambda: system.typed(rpc)(request, timeout=CALL_TIMEOUT_S))
    event(f"{rpc.server} {rpc.method.name}: {code.name}")
    system.check(rpc, code, details, request)
    check_read_limits(rpc, request, code, details)


@st.composite
def beyond_limits_requests(draw: st.DrawFn, world: World) -> tuple[Rpc, Message, str]:
    """A valid query but for one field beyond the read server's limits (a text longer
    than a stored one, an id spelled longer than a UUID can be, a consistency token from
    beyond the log's head); returns the field too."""
    limited = [r for r in QUERY_RPCS if _limited_fields(r)]
    rpc = draw(st.sampled_from(limited), label="rpc")
    name = draw(st.sampled_from(_limited_fields(rpc)), label="field")
    request = _valid_request(rpc, world)
    if name == "category":
        value = draw(st.builds(lambda c, n: c * n, any_char, st.integers(MAX_TEXT + 1, 50_000)))
    elif name == "consistency_token":
        xid = draw(st.integers(FUTURE_XID, 2**63 - 1), label="xid")
        value = f"c1.{xid:x}.{draw(st.integers(0, 2**63 - 1)):x}"
    else:
        real = getattr(request, name)
        value = draw(
            st.one_of(
                st.integers(MAX_UUID_CHARS - 35, 100_000).map(lambda n: "-" * n + real),
                st.text(any_char, min_size=MAX_UUID_CHARS + 1, max_size=2000),
            ),
            label=name,
        )
    setattr(request, name, value)
    return rpc, request, name


# Far beyond any transaction id this cluster will assign while the tests run.
FUTURE_XID = 2**40


def _limited_fields(rpc: Rpc) -> list[str]:
    fields = rpc.request_class.DESCRIPTOR.fields_by_name
    return [n for n in ("category", "consistency_token", *_ID_FIELDS) if n in fields]


def _valid_request(rpc: Rpc, world: World) -> Message:
    """A request of ``rpc`` every source takes (the read model waits for tokens; Watch
    streams follow only the projection)."""
    cls = rpc.request_class
    source = qpb.SOURCE_PROJECTION if rpc.method.server_streaming else qpb.SOURCE_READ_MODEL
    values: dict[str, Any] = {
        "id": _entity_ids(cls.DESCRIPTOR, world)[0], "customer_id": world.customers[0],
        "product_id": world.products[0], "aggregate_id": world.products[0],
        "aggregate_type": history_pb2.AGGREGATE_TYPE_PRODUCT, "subscription_id": world.products[0],
        "from_month": "2026-01", "to_month": "2026-01", "query": "seed",
        "source": source, "as_of": Timestamp(seconds=1_800_000_000),
    }  # fmt: skip
    fields = cls.DESCRIPTOR.fields_by_name
    return cls(**{name: value for name, value in values.items() if name in fields})


@hsettings(FUZZ, max_examples=100)
@given(data=st.data())
def test_read_fields_beyond_the_limits_are_invalid_argument(
    system: System, data: st.DataObject
) -> None:
    """Any query with one field beyond the read server's limits names that field."""
    rpc, request, name = data.draw(beyond_limits_requests(system.world))
    code, details, error = outcome(lambda: system.typed(rpc)(request, timeout=CALL_TIMEOUT_S))
    event(f"{rpc.method.name}.{name}: {code.name}")
    assert code == Code.INVALID_ARGUMENT, f"{rpc.path} {name}: {code.name} {details!r}"
    assert isinstance(error, grpc.RpcError)
    assert set(field_violations(error)) == {name}, details
    system.assert_up()


_ID_FIELDS = ("id", "customer_id", "product_id", "aggregate_id", "subscription_id")


def check_read_limits(rpc: Rpc, request: Message, code: grpc.StatusCode, details: str) -> None:
    """A read field beyond the write side's limits is INVALID_ARGUMENT; a consistency
    token beyond the log's head is never UNAVAILABLE (the wait it used to get)."""
    if rpc.server != "read" or rpc.method.containing_service.name != "QueryService":
        return
    values = {f.name: value for f, value in request.ListFields()}
    oversized = len(values.get("category", "")) > MAX_TEXT or any(
        len(values.get(name, "")) > MAX_UUID_CHARS for name in _ID_FIELDS
    )
    if oversized:
        assert code == Code.INVALID_ARGUMENT, f"{rpc.path}: {code.name} {details!r}"
    try:
        position = decode_token(values.get("consistency_token", ""))
    except InvalidToken:
        return
    if position is not None and position.xid >= FUTURE_XID:
        assert code != Code.UNAVAILABLE, f"{rpc.path}: {code.name} {details!r}"


@hsettings(FUZZ, max_examples=200)
@given(data=st.data())
def test_undecodable_bodies_answer_only_documented_statuses(
    system: System, data: st.DataObject
) -> None:
    """Any bytes as the body of any method of either server (health too)."""
    rpc, body = data.draw(raw_requests(system.world))
    code, details, _ = outcome(lambda: system.raw(rpc)(body, timeout=CALL_TIMEOUT_S))
    event(f"{rpc.server} {rpc.method.name}: {code.name}")
    system.check(rpc, code, details, body)


# --------------------------------------------------------------------- explicit cases


def _expect_invalid(
    system: System, rpc: Rpc, request: Message | bytes, *, raw: bool = False
) -> tuple[str, dict[str, str]]:
    """Call ``rpc``; it must answer INVALID_ARGUMENT. Returns details and violations."""
    call = system.raw(rpc) if raw else system.typed(rpc)
    code, details, error = outcome(lambda: call(request, timeout=CALL_TIMEOUT_S))
    assert code == Code.INVALID_ARGUMENT, f"{rpc.path}: {code.name} {details!r}\n{system.logs()}"
    assert isinstance(error, grpc.RpcError)
    return details, field_violations(error)


def _rpc(name: str) -> Rpc:
    return next(r for r in COMMAND_RPCS + QUERY_RPCS if r.method.name == name)


NUL_CASES: list[tuple[str, Callable[[World], Message], str]] = [
    (
        "CreateProduct",
        lambda w: cpb.CreateProductRequest(name="mug\x00", price_cents=1, currency="EUR"),
        "name",
    ),
    (
        "CreateCustomer",
        lambda w: cpb.CreateCustomerRequest(name="Ann", email="nul@example.org", city="\x00"),
        "city",
    ),
    (
        "UpdateProduct",
        lambda w: cpb.UpdateProductRequest(id=w.products[0], category="a\x00b"),
        "category",
    ),
] + [
    (
        "ListProducts",
        lambda w, s=source: qpb.ListProductsRequest(category="books\x00", source=s),
        "category",
    )
    for source in SOURCES
]


@pytest.mark.parametrize(
    ("method", "build", "field_name"),
    NUL_CASES,
    ids=[f"{m}.{f}-{i}" for i, (m, _, f) in enumerate(NUL_CASES)],
)
def test_nul_character_is_invalid_argument_naming_the_field(
    system: System, method: str, build: Callable[[World], Message], field_name: str
) -> None:
    """PostgreSQL cannot store U+0000: the server names the field instead of failing."""
    _, violations = _expect_invalid(system, _rpc(method), build(system.world))
    assert set(violations) == {field_name}, violations
    assert "NUL" in violations[field_name]


@pytest.mark.parametrize("timestamp_hex", ["ffffffffffffffff", "7fffffffffffffff"])
@pytest.mark.parametrize("source", SOURCES, ids=qpb.Source.Name)
@pytest.mark.parametrize("method", ["ListProducts", "ListCustomers", "ListOrders"])
def test_page_token_beyond_year_9999_is_invalid_argument(
    system: System, method: str, source: int, timestamp_hex: str
) -> None:
    """A token in the issued format whose time no datetime can hold, on every source."""
    token = out_of_range_page_token(timestamp_hex, system.world.products[0])
    rpc = _rpc(method)
    _, violations = _expect_invalid(system, rpc, rpc.request_class(page_token=token, source=source))
    assert set(violations) == {"page_token"}, violations


# Analytics come from the read model or the write model only.
_ANALYTICS = {"GetCustomerStats", "GetProductSalesStats", "ListTopProducts", "ListTopCustomers",
              "GetMonthlyRevenue"}  # fmt: skip
_TOKEN_CASES = [
    (m.name, source)
    for m in QUERY_SERVICE.methods
    if "consistency_token" in m.input_type.fields_by_name
    for source in (SOURCES if "source" in m.input_type.fields_by_name else (0,))
    if not (m.name in _ANALYTICS and source == qpb.SOURCE_PROJECTION)
    # Watch streams follow the projection only.
    and not (m.server_streaming and source != qpb.SOURCE_PROJECTION)
]


@pytest.mark.parametrize(("method", "source"), _TOKEN_CASES)
def test_huge_consistency_token_is_invalid_argument(
    system: System, method: str, source: int
) -> None:
    """Thousands of hex digits are no position (and must not be parsed as one)."""
    rpc = _rpc(method)
    world = system.world
    valid = {"id": world.products[0], "customer_id": world.customers[0],
             "product_id": world.products[0], "from_month": "2026-01", "to_month": "2026-01",
             "query": "seed", "source": source, "subscription_id": world.products[0]}  # fmt: skip
    fields = rpc.request_class.DESCRIPTOR.fields_by_name
    request = rpc.request_class(
        consistency_token="c1." + "f" * 4000 + ".1",
        **{name: value for name, value in valid.items() if name in fields},
    )
    _, violations = _expect_invalid(system, rpc, request)
    assert set(violations) == {"consistency_token"}, violations


# The sources that wait for a token (the write model and live analytics never do).
_WAITING_TOKEN_CASES = [
    (method, source) for method, source in _TOKEN_CASES if source != qpb.SOURCE_WRITE_MODEL
]


@pytest.mark.parametrize(("method", "source"), _WAITING_TOKEN_CASES)
def test_a_consistency_token_from_the_future_is_invalid_argument_at_once(
    system: System, method: str, source: int
) -> None:
    """A forged token beyond the log's head held a read for the whole consistency wait
    and then answered UNAVAILABLE (a server fault, to the alerts)."""
    rpc = _rpc(method)
    world = system.world
    valid = {"id": world.products[0], "customer_id": world.customers[0],
             "product_id": world.products[0], "from_month": "2026-01", "to_month": "2026-01",
             "query": "seed", "source": source, "subscription_id": world.products[0]}  # fmt: skip
    fields = rpc.request_class.DESCRIPTOR.fields_by_name
    request = rpc.request_class(
        consistency_token=f"c1.{FUTURE_XID:x}.1",
        **{name: value for name, value in valid.items() if name in fields},
    )
    started = time.monotonic()
    details, violations = _expect_invalid(system, rpc, request)
    assert time.monotonic() - started < 1.0
    assert set(violations) == {"consistency_token"}, violations
    assert "ahead of the event log" in details


_OVERSIZED: list[tuple[str, Callable[[World], Message], str]] = [
    *(
        (
            "ListProducts",
            lambda w, s=source, c=category: qpb.ListProductsRequest(category=c, source=s),
            "category",
        )
        for source in SOURCES
        for category in ("x" * (MAX_TEXT + 1), "☃" * 1_000_000)
    ),
    # uuid.UUID drops every hyphen: a real id behind 100,000 of them.
    ("GetProduct", lambda w: qpb.GetProductRequest(id="-" * 100_000 + w.products[0]), "id"),
    (
        "ListOrders",
        lambda w: qpb.ListOrdersRequest(customer_id="-" * 100_000 + w.customers[0]),
        "customer_id",
    ),
    (
        "GetAggregateHistory",
        lambda w: qpb.GetAggregateHistoryRequest(
            aggregate_type=history_pb2.AGGREGATE_TYPE_PRODUCT,
            aggregate_id="-" * 100_000 + w.products[0],
        ),
        "aggregate_id",
    ),
]


@pytest.mark.parametrize(
    ("method", "build", "field_name"),
    _OVERSIZED,
    ids=[f"{m}.{f}-{i}" for i, (m, _, f) in enumerate(_OVERSIZED)],
)
def test_an_oversized_read_field_is_invalid_argument(
    system: System, method: str, build: Callable[[World], Message], field_name: str
) -> None:
    """Megabytes of category were keys of the near-cache (the read server grew by 200 MB):
    no read field may be longer than the write side could store."""
    _, violations = _expect_invalid(system, _rpc(method), build(system.world))
    assert set(violations) == {field_name}, violations


async def test_a_history_page_of_large_events_fits_a_default_client(system: System) -> None:
    """120 updates of a 5,000-emoji description (20 kB in UTF-8, twice per event): a page
    of 1,000 events passed the 4 MB a client receives by default (RESOURCE_EXHAUSTED)."""
    async with grpc.aio.insecure_channel(system.write.address) as channel:
        write = cpb_grpc.CommandServiceStub(channel)
        product = await write.CreateProduct(
            cpb.CreateProductRequest(name="big history", price_cents=1, currency="EUR"),
            timeout=CALL_TIMEOUT_S,
        )
        for n in range(120):
            await write.UpdateProduct(
                cpb.UpdateProductRequest(id=product.id, description=chr(0x1F600 + n % 50) * 5000),
                timeout=CALL_TIMEOUT_S,
            )
    versions: list[int] = []
    token = ""
    async with grpc.aio.insecure_channel(system.read.address) as channel:  # default options
        query = qpb_grpc.QueryServiceStub(channel)
        while True:
            page = await query.GetAggregateHistory(
                qpb.GetAggregateHistoryRequest(
                    aggregate_type=history_pb2.AGGREGATE_TYPE_PRODUCT,
                    aggregate_id=product.id,
                    page_size=1000,
                    page_token=token,
                ),
                timeout=CALL_TIMEOUT_S,
            )
            versions += [e.version for e in page.events]
            token = page.next_page_token
            if not token:
                break
    assert versions == list(range(1, 122))


async def test_hundred_duplicate_items_fit_a_default_client(system: System) -> None:
    """99 violations would overflow a client's 16 KiB metadata limit (RESOURCE_EXHAUSTED,
    hiding the real error): the details stay bounded and a default client reads them."""
    items = [cpb.PlaceOrderRequest.Item(product_id=system.world.products[0], quantity=1)] * 100
    request = cpb.PlaceOrderRequest(customer_id=system.world.customers[0], items=items)
    async with grpc.aio.insecure_channel(system.write.address) as channel:  # default options
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await cpb_grpc.CommandServiceStub(channel).PlaceOrder(request, timeout=CALL_TIMEOUT_S)
    error = raised.value
    assert error.code() == Code.INVALID_ARGUMENT, f"{error.code()}: {error.details()}"
    violations = field_violations(error)
    assert 1 < len(violations) <= 21, violations
    assert "duplicate" in violations["items[1].product_id"]


def _undecodable_cases() -> list[tuple[Rpc, str, bytes]]:
    """Per method (and health on both servers): a length running past the end, and
    invalid UTF-8 (``c3 28``, and a UTF-8-encoded lone surrogate) in its first string field."""
    cases: list[tuple[Rpc, str, bytes]] = []
    for rpc in ALL_RPCS:
        number = first_string_field(rpc.method.input_type).number
        cases += [
            (rpc, "truncated", bytes.fromhex("0a ff ff ff ff 0f")),
            (rpc, "bad-utf8", length_delimited(number, bytes.fromhex("c3 28"))),
            (rpc, "surrogate", length_delimited(number, "\ud800".encode("utf-8", "surrogatepass"))),
        ]
    return cases


UNDECODABLE = _undecodable_cases()


@pytest.mark.parametrize(
    ("rpc", "kind", "body"),
    UNDECODABLE,
    ids=[f"{r.server}-{r.method.name}-{k}" for r, k, _ in UNDECODABLE],
)
def test_undecodable_body_is_invalid_argument(
    system: System, rpc: Rpc, kind: str, body: bytes
) -> None:
    """gRPC would answer UNKNOWN if deserializing raised: the server says what is wrong."""
    details, violations = _expect_invalid(system, rpc, body, raw=True)
    assert details == f"request is not a valid {rpc.method.input_type.full_name}"
    assert set(violations) == {"request"}, violations


@pytest.mark.parametrize("method", ["ListProducts", "ListCustomers", "ListOrders"])
def test_bytes_in_an_int_field_are_an_unknown_field(system: System, method: str) -> None:
    """``0a 02 c3 28`` is invalid UTF-8 only where field 1 is a string. The List requests'
    field 1 is ``int32 page_size``: protobuf keeps the mismatched record as an unknown
    field, so the request is a valid default list and is answered OK."""
    rpc = _rpc(method)
    body = bytes.fromhex("0a 02 c3 28")
    code, details, reply = outcome(lambda: system.raw(rpc)(body, timeout=CALL_TIMEOUT_S))
    assert code == Code.OK, f"{code.name}: {details}"
    assert isinstance(reply, bytes)
    rpc.response_class.FromString(reply)


# ------------------------------------------------- known bugs (see the module's report)


def _fresh_customer(system: System) -> str:
    """A customer of the test's own: the fuzzers may have deleted the seeded ones."""
    reply = cpb_grpc.CommandServiceStub(system.write.channel).CreateCustomer(
        cpb.CreateCustomerRequest(name="own", email=f"own-{uuid.uuid4().hex}@example.org"),
        timeout=CALL_TIMEOUT_S,
    )
    return str(reply.id)


def test_cancel_that_would_overflow_stock_is_a_failed_precondition(system: System) -> None:
    """A product at the largest stock gets a pending order's quantity back on cancel
    (found here: it used to overflow the int32 column and answer INTERNAL)."""
    command = cpb_grpc.CommandServiceStub(system.write.channel)
    product = command.CreateProduct(
        cpb.CreateProductRequest(name="overflow", price_cents=1, currency="EUR", stock=10)
    )
    order = command.PlaceOrder(
        cpb.PlaceOrderRequest(
            customer_id=_fresh_customer(system),
            items=[cpb.PlaceOrderRequest.Item(product_id=product.id, quantity=5)],
        )
    )
    command.UpdateProduct(cpb.UpdateProductRequest(id=product.id, stock=INT32[1]))
    rpc = _rpc("CancelOrder")
    request = cpb.CancelOrderRequest(id=order.id)
    code, details, _ = outcome(lambda: system.typed(rpc)(request, timeout=CALL_TIMEOUT_S))
    system.check(rpc, code, details, request)
    assert code == grpc.StatusCode.FAILED_PRECONDITION, details


def test_order_total_beyond_int64_is_a_failed_precondition(system: System) -> None:
    """100 lines at the largest price and quantity: each line fits, the total does not
    (found here: it used to overflow the int64 column and answer INTERNAL)."""
    command = cpb_grpc.CommandServiceStub(system.write.channel)
    products = [
        command.CreateProduct(
            cpb.CreateProductRequest(
                name=f"dear {i}", price_cents=10**13, currency="EUR", stock=10_000
            )
        ).id
        for i in range(100)
    ]
    rpc = _rpc("PlaceOrder")
    request = cpb.PlaceOrderRequest(
        customer_id=_fresh_customer(system),
        items=[cpb.PlaceOrderRequest.Item(product_id=p, quantity=10_000) for p in products],
    )
    code, details, _ = outcome(lambda: system.typed(rpc)(request, timeout=CALL_TIMEOUT_S))
    system.check(rpc, code, details, request)
    assert code == grpc.StatusCode.FAILED_PRECONDITION, details


# ------------------------------------------------------------------------ afterwards


def test_projector_digests_hostile_but_valid_writes(system: System) -> None:
    """Text that is valid yet hostile (controls, bidi, astral, glob and key syntax) is
    projected like any other: all sources agree, and ``projector verify`` finds no
    difference with the write model, including whatever the fuzzers above wrote."""
    command = cpb_grpc.CommandServiceStub(system.write.channel)
    query = qpb_grpc.QueryServiceStub(system.read.channel)
    weird = ["\x01\x1f\x7f\u200b", "\u202eevil\u202c", "\U0001f600" * 200, "a:b*c?[d]\\", "Ω\ufeff"]
    category = "cat:*?[x]\\ \u202e\x07"
    products = [
        command.CreateProduct(
            cpb.CreateProductRequest(
                name=name,
                description=name,
                price_cents=1,
                currency="EUR",
                category=category,
                stock=5,
            ),
            timeout=CALL_TIMEOUT_S,
        ).id
        for name in weird
    ]
    customer = command.CreateCustomer(
        cpb.CreateCustomerRequest(
            name=weird[1], email=f"ünï{uuid.uuid4().hex}@exämple.org", city=weird[0]
        ),
        timeout=CALL_TIMEOUT_S,
    )
    last = command.PlaceOrder(
        cpb.PlaceOrderRequest(
            customer_id=customer.id,
            items=[cpb.PlaceOrderRequest.Item(product_id=products[0], quantity=1)],
        ),
        timeout=CALL_TIMEOUT_S,
    )
    # The last write's transaction started after every earlier one committed (calls are
    # sequential), so once projected at its token, everything before it is too.
    _wait_projected(system, last.consistency_token)
    pages = {
        source: query.ListProducts(
            qpb.ListProductsRequest(
                category=category, source=source, consistency_token=last.consistency_token
            ),
            timeout=CALL_TIMEOUT_S,
        )
        for source in SOURCES
    }
    assert [p.name for p in pages[qpb.SOURCE_WRITE_MODEL].products] == weird[::-1]
    assert pages[qpb.SOURCE_PROJECTION] == pages[qpb.SOURCE_WRITE_MODEL]
    assert pages[qpb.SOURCE_READ_MODEL] == pages[qpb.SOURCE_WRITE_MODEL]
    verified = subprocess.run(
        [sys.executable, "-m", "cqrs", "projector", "verify"],
        env=system.env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert verified.returncode == 0, verified.stdout[-4000:] + verified.stderr[-4000:]
    system.assert_up()
