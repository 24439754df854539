"""PgBouncer in transaction mode in front of PostgreSQL (Debian's ``pgbouncer``): the write
and read servers work through it with ``CQRS_DB_STATEMENT_CACHE_SIZE=0``; the projector,
whose leases and LISTEN are session state, connects directly."""

from __future__ import annotations

import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import grpc
import pytest

from common.pb.shop.v1 import command_service_pb2 as cpb
from common.pb.shop.v1 import command_service_pb2_grpc as cpb_grpc
from common.pb.shop.v1 import query_service_pb2 as qpb
from common.pb.shop.v1 import query_service_pb2_grpc as qpb_grpc
from common.settings import Settings
from tests.support.pgbouncer import BINARY, pgbouncer
from tests.support.system import System

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        BINARY is None, reason="pgbouncer is not installed (apt-get install pgbouncer)"
    ),
]


def _through(url: str, port: int) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit(":", 1)[0] if ":" in parts.netloc.split("@")[-1] else parts.netloc
    return urlunsplit(parts._replace(netloc=f"{netloc}:{port}"))


def _clients(port: int, database: str) -> int:
    """Client connections PgBouncer has for ``database`` (its admin console)."""
    shown = subprocess.run(
        ["psql", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-At", "-F", "|",
         "-c", "SHOW CLIENTS", "pgbouncer"],
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout  # fmt: skip
    return sum(1 for line in shown.splitlines() if line.split("|")[2:3] == [database])


def test_write_and_read_paths_through_pgbouncer(
    settings: Settings, tmp_path: Path, scratch: Path
) -> None:
    direct = urlsplit(settings.asyncpg_dsn)
    database = direct.path.lstrip("/")
    assert direct.hostname is not None and direct.port is not None
    with pgbouncer(scratch, direct.hostname, direct.port, direct.username or "postgres") as port:
        bounced = {
            "CQRS_DATABASE_URL": _through(settings.asyncpg_dsn, port),
            "CQRS_DB_STATEMENT_CACHE_SIZE": "0",
        }
        system = System(settings, tmp_path)
        try:
            system.start("write", env=bounced)
            system.start("read", env=bounced)
            system.start("projector")  # direct: session advisory locks and LISTEN
            with grpc.insecure_channel(system.write) as channel:
                write = cpb_grpc.CommandServiceStub(channel)

                def create(n: int) -> cpb.CommandReply:
                    return write.CreateProduct(  # type: ignore[no-any-return]
                        cpb.CreateProductRequest(
                            name=f"mug {n}", price_cents=100 + n, currency="EUR", stock=10,
                            category="kitchen",
                        ),
                        timeout=30,
                    )  # fmt: skip

                # Concurrent commands: each may run on another server connection, where a
                # statement prepared on the last one does not exist.
                with ThreadPoolExecutor(8) as pool:
                    products = list(pool.map(create, range(40)))
                customer = write.CreateCustomer(
                    cpb.CreateCustomerRequest(name="Ada", email="ada@example.com"), timeout=30
                )
                order = write.PlaceOrder(
                    cpb.PlaceOrderRequest(
                        customer_id=customer.id,
                        items=[cpb.PlaceOrderRequest.Item(product_id=products[0].id, quantity=2)],
                    ),
                    timeout=30,
                )
            assert _clients(port, database) >= 1  # the servers' pools are PgBouncer's clients
            with grpc.insecure_channel(system.read) as channel:
                read = qpb_grpc.QueryServiceStub(channel)
                for source in (qpb.SOURCE_WRITE_MODEL, qpb.SOURCE_READ_MODEL):
                    got = read.GetOrder(
                        qpb.GetOrderRequest(
                            id=order.id, source=source, consistency_token=order.consistency_token
                        ),
                        timeout=60,
                    )
                    assert got.customer_name == "Ada" and got.items[0].quantity == 2
                    listed = read.ListProducts(
                        qpb.ListProductsRequest(
                            page_size=100,
                            source=source,
                            category="kitchen",
                            consistency_token=order.consistency_token,
                        ),
                        timeout=60,
                    )
                    assert {p.id for p in listed.products} == {p.id for p in products}
        finally:
            codes = system.stop_all()
        assert set(codes.values()) == {0}, f"{codes}\n{system.log_tails()}"
