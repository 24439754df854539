"""The read server on a PostgreSQL streaming replica (``CQRS_READ_DATABASE_URL``): read
models answered from the replica, a consistency token never answered stale however far
behind the replica replays (``recovery_min_apply_delay``), the primary answering while the
replica lags beyond the bound or is down."""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest

from common.errors import Unavailable
from common.pb.shop.v1 import command_service_pb2 as cpb
from common.pb.shop.v1 import command_service_pb2_grpc as cpb_grpc
from common.pb.shop.v1 import query_service_pb2 as qpb
from common.pb.shop.v1 import query_service_pb2_grpc as qpb_grpc
from common.positions import Position
from common.settings import Settings
from read_server.sources.base import Freshness
from read_server.sources.replica import ReplicaCommits
from tests.cluster.conftest import Replicated
from tests.support.scrape import scrape
from tests.support.servers import free_port
from tests.support.system import System

pytestmark = pytest.mark.cluster


def _reads(port: int, database: str) -> float:
    return scrape(port).get(("cqrs_db_reads_total", (("database", database),)), 0.0)


def _in_rotation(port: int) -> float:
    return scrape(port).get(("cqrs_read_replica_in_rotation", ()), -1.0)


def _until(what: str, check: object, within: float) -> None:
    deadline = time.monotonic() + within
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def _apply_delay(url: str, delay: str) -> None:
    """Make the replica replay only WAL older than ``delay`` (its own server: allowed)."""

    async def run() -> None:
        conn = await asyncpg.connect(url.rsplit("/", 1)[0] + "/postgres")
        try:
            await conn.execute(f"ALTER SYSTEM SET recovery_min_apply_delay = '{delay}'")
            await conn.execute("SELECT pg_reload_conf()")
        finally:
            await conn.close()

    asyncio.run(run())


@contextmanager
def _on_the_replica(
    settings: Settings,
    replicated: Replicated,
    tmp_path: Path,
    system_env: dict[str, str],
    read_env: dict[str, str],
) -> Iterator[tuple[Any, Any, int]]:
    """The write server and the projector on the primary, the read server also on the
    replica (``read_env`` over that), waited for until the replica is in rotation; yields
    the command and query stubs and the read server's metrics port. On exit each process
    must stop with status 0."""
    on_primary = dataclasses.replace(settings, database_url=replicated.primary.url)
    metrics = free_port()
    system = System(on_primary, tmp_path, system_env)
    replica_env = {
        "CQRS_READ_DATABASE_URL": replicated.replica.url,
        "CQRS_READ_METRICS_PORT": str(metrics),
        **read_env,
    }
    try:
        system.start("write")
        system.start("projector")
        system.start("read", env=replica_env)
        _until("replica in rotation", lambda: _in_rotation(metrics) == 1, 30)
        with (
            grpc.insecure_channel(system.write) as w,
            grpc.insecure_channel(system.read) as r,
        ):
            yield cpb_grpc.CommandServiceStub(w), qpb_grpc.QueryServiceStub(r), metrics
    finally:
        codes = system.stop_all()
    assert set(codes.values()) == {0}, f"{codes}\n{system.log_tails()}"


def test_reads_from_the_replica_never_behind_a_token(
    settings: Settings, replicated: Replicated, tmp_path: Path
) -> None:
    with _on_the_replica(
        settings,
        replicated,
        tmp_path,
        {"CQRS_CONSISTENCY_WAIT_MAX_MS": "8000", "CQRS_PROJECTOR_POLL_INTERVAL_MS": "100"},
        {"CQRS_READ_REPLICA_MAX_LAG_MS": "4000"},
    ) as (write, read, metrics):
        created = write.CreateProduct(
            cpb.CreateProductRequest(name="mug", price_cents=100, currency="EUR", stock=5),
            timeout=30,
        )

        def update_and_read(n: int) -> dict[int, float]:
            """For each of the read model and the write model: rename, then read it back
            from that source with the reply's token; the seconds each read took."""
            took: dict[int, float] = {}
            for i, source in enumerate((qpb.SOURCE_READ_MODEL, qpb.SOURCE_WRITE_MODEL)):
                name = f"mug {n}.{i}"
                reply = write.UpdateProduct(
                    cpb.UpdateProductRequest(id=created.id, name=name), timeout=30
                )
                started = time.monotonic()
                got = read.GetProduct(
                    qpb.GetProductRequest(
                        id=created.id, source=source, consistency_token=reply.consistency_token
                    ),
                    timeout=30,
                )
                took[source] = time.monotonic() - started
                assert got.name == name, f"stale {source}: {got.name!r}, wrote {name!r}"
            return took

        before = _reads(metrics, "replica")
        for n in range(5):
            update_and_read(n)
        assert _reads(metrics, "replica") >= before + 10  # the replica answered both

        # The replica replays 1.5 s late: still within the 4 s bound, so it answers,
        # and every read waits for its token there instead of answering stale.
        _apply_delay(replicated.replica.url, "1500ms")
        before = _reads(metrics, "replica")
        waited = [update_and_read(n) for n in range(5, 10)]
        assert _reads(metrics, "replica") >= before + 10
        for source in (qpb.SOURCE_READ_MODEL, qpb.SOURCE_WRITE_MODEL):
            # the token was waited for on the replica: its checkpoint, its transaction
            assert max(w[source] for w in waited) >= 1.0, waited

        # 6 s late: beyond the bound, out of rotation; the primary answers at once.
        _apply_delay(replicated.replica.url, "6s")
        for n in range(10, 14):
            update_and_read(n)
            time.sleep(0.5)
        _until("replica out of rotation", lambda: _in_rotation(metrics) == 0, 20)
        before = _reads(metrics, "primary")
        waited = [update_and_read(n) for n in range(14, 18)]
        assert _reads(metrics, "primary") >= before + 8
        assert max(max(w.values()) for w in waited) < 1.0, waited

        # The replica stopped: the primary goes on answering.
        replicated.replica.stop()
        for n in range(18, 21):
            update_and_read(n)
        assert _in_rotation(metrics) == 0
        lag = scrape(metrics)
        assert ("cqrs_read_replica_lag_bytes", ()) in lag


PROGRAMS = 200


def test_no_token_read_is_stale_over_random_programs(
    settings: Settings, replicated: Replicated, tmp_path: Path
) -> None:
    """200 random programs (seeded: the seed is printed), each a command and reads with its
    token from the read model and the write model, on a replica replaying 50 ms late:
    every read shows the command's version; an order read after its customer's rename
    shows the new name (the embed), however far the replica is behind."""
    seed = random.randrange(1 << 30)
    print(f"\nseed {seed}")
    rng = random.Random(seed)
    _apply_delay(replicated.replica.url, "50ms")
    sources = (qpb.SOURCE_READ_MODEL, qpb.SOURCE_WRITE_MODEL)
    with _on_the_replica(
        settings, replicated, tmp_path, {"CQRS_CONSISTENCY_WAIT_MAX_MS": "8000"}, {}
    ) as (write, read, metrics):
        products: list[str] = []
        customers: dict[str, list[str]] = {}  # customer -> its orders

        def check(kind: str, ident: str, reply: cpb.CommandReply, **want: object) -> None:
            for source in sources:
                getter = getattr(read, f"Get{kind}")
                request = getattr(qpb, f"Get{kind}Request")
                got = getter(
                    request(id=ident, source=source, consistency_token=reply.consistency_token),
                    timeout=30,
                )
                for field, value in want.items():
                    assert getattr(got, field) == value, (seed, kind, source, field)

        for n in range(PROGRAMS):
            step = rng.choice(["product", "rename", "customer", "order", "recontact"])
            if step == "product" or not products:
                reply = write.CreateProduct(
                    cpb.CreateProductRequest(
                        name=f"p{n}", price_cents=100, currency="EUR", stock=1000
                    ),
                    timeout=30,
                )
                products.append(reply.id)
                check("Product", reply.id, reply, name=f"p{n}", version=reply.version)
            elif step == "rename":
                ident = rng.choice(products)
                reply = write.UpdateProduct(
                    cpb.UpdateProductRequest(id=ident, name=f"p{n}"), timeout=30
                )
                check("Product", ident, reply, name=f"p{n}", version=reply.version)
            elif step == "customer" or not customers:
                reply = write.CreateCustomer(
                    cpb.CreateCustomerRequest(name=f"c{n}", email=f"c{n}@example.com"),
                    timeout=30,
                )
                customers[reply.id] = []
                check("Customer", reply.id, reply, name=f"c{n}", version=reply.version)
            elif step == "order":
                customer = rng.choice(list(customers))
                reply = write.PlaceOrder(
                    cpb.PlaceOrderRequest(
                        customer_id=customer,
                        items=[cpb.PlaceOrderRequest.Item(product_id=rng.choice(products),
                                                          quantity=1)],
                    ),
                    timeout=30,
                )  # fmt: skip
                customers[customer].append(reply.id)
                check("Order", reply.id, reply, version=reply.version)
            else:
                customer = rng.choice(list(customers))
                reply = write.UpdateCustomer(
                    cpb.UpdateCustomerRequest(id=customer, name=f"c{n}"), timeout=30
                )
                check("Customer", customer, reply, name=f"c{n}", version=reply.version)
                for order in customers[customer]:  # each shows the new name
                    check("Order", order, reply, customer_name=f"c{n}")
        assert _reads(metrics, "replica") >= 2 * PROGRAMS  # the replica answered them


async def _nothing_from_the_future(_: Position) -> None:
    return None


async def _until_replayed(replica: asyncpg.Pool, query: str) -> None:
    for _ in range(200):
        if await replica.fetchval(query):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"the replica never showed {query}")


async def _a_transaction_still_being_replayed(replicated: Replicated) -> None:
    primary = await asyncpg.connect(replicated.primary.url)
    writer = await asyncpg.connect(replicated.primary.url)
    replica = await asyncpg.create_pool(replicated.replica.url, min_size=1, max_size=2)
    commits = ReplicaCommits(replica, _nothing_from_the_future)
    try:
        await primary.execute("CREATE TABLE replay_probe (n int)")
        await _until_replayed(replica, "SELECT to_regclass('replay_probe') IS NOT NULL")
        open_tx = writer.transaction()
        await open_tx.start()
        await writer.execute("INSERT INTO replay_probe VALUES (1)")
        xid = int(await writer.fetchval("SELECT pg_current_xact_id()::text::bigint"))
        # A later transaction commits and is replayed while the first is still open: the
        # replica's snapshot then lists no transaction in progress, yet the row is not there.
        await primary.execute("INSERT INTO replay_probe VALUES (2)")
        await _until_replayed(replica, "SELECT count(*) FROM replay_probe WHERE n = 2")
        with pytest.raises(Unavailable):
            await commits.wait(Freshness(Position(xid, 0), max_wait_s=0.5))
        assert await replica.fetchval("SELECT count(*) FROM replay_probe WHERE n = 1") == 0

        await open_tx.commit()
        await commits.wait(Freshness(Position(xid, 0), max_wait_s=10))
        assert await replica.fetchval("SELECT count(*) FROM replay_probe WHERE n = 1") == 1
    finally:
        await replica.close()
        await writer.close()
        await primary.close()


def test_a_token_is_not_reached_while_its_transaction_is_still_being_replayed(
    replicated: Replicated,
) -> None:
    """The write model's token on the replica: not reached while its transaction is open
    (still to be replayed), though a later one has been replayed; reached once it commits."""
    asyncio.run(_a_transaction_still_being_replayed(replicated))
