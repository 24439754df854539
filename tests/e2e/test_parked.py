"""A parked aggregate seen from outside: the write server, the projector (``park`` policy
for every projection) and the read server as processes, gRPC and ``grpcurl`` clients, and
the ``cqrs projector parked|unpark`` commands an operator types.

A poison event parks its product: reads of it from the projection and the read model
answer FAILED_PRECONDITION naming the event, the write model still answers, other products
follow their commands; ``cqrs projector parked`` lists it; after the fix ``cqrs projector
unpark`` replays it and the reads answer again, equal to the write model.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
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
from tests.support.events import append_poison_update
from tests.support.servers import grpcurl
from tests.support.system import System, running

pytestmark = pytest.mark.e2e

WAIT_S = 20.0
PROJECTED = (qpb.SOURCE_PROJECTION, qpb.SOURCE_READ_MODEL)


@pytest.fixture
def system(settings: Settings, tmp_path: Path) -> Iterator[System]:
    with running(settings, tmp_path, CQRS_PROJECTOR_PARK="*") as system:
        system.wait_built()
        yield system


def _until(check: Callable[[], Any], what: str, system: System) -> Any:
    deadline = time.monotonic() + WAIT_S
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, f"{what}\n{system.explain()}"
        time.sleep(0.1)


def _get(read: Any, ident: str, source: int) -> Any:
    try:
        return read.GetProduct(qpb.GetProductRequest(id=ident, source=source), timeout=5)
    except grpc.RpcError as exc:
        return exc


async def _poison(settings: Settings, ident: str) -> int:
    conn = await asyncpg.connect(settings.asyncpg_dsn)
    try:
        async with conn.transaction():
            return await append_poison_update(conn, ident)
    finally:
        await conn.close()


async def _fix(settings: Settings, seq: int, ident: str) -> None:
    """What a deployed fix does here: the event reads as intended (as an upcaster would)."""
    conn = await asyncpg.connect(settings.asyncpg_dsn)
    try:
        await conn.execute(
            'UPDATE events SET payload = \'{"changes": {"stock": 7}}\' WHERE seq = $1', seq
        )
        await conn.execute("UPDATE products SET stock = 7 WHERE id = $1::uuid", ident)
    finally:
        await conn.close()


def _refusal(answer: Any) -> grpc.RpcError | None:
    if isinstance(answer, grpc.RpcError) and answer.code() != grpc.StatusCode.NOT_FOUND:
        assert answer.code() == grpc.StatusCode.FAILED_PRECONDITION, answer
        return answer
    return None


def _product(write: Any, name: str) -> Any:
    return write.CreateProduct(
        cpb.CreateProductRequest(
            name=name, price_cents=100, currency="EUR", category="kitchen", stock=5
        ),
        timeout=5,
    )


def test_a_parked_product_is_refused_to_readers_until_it_is_unparked(
    system: System,
) -> None:
    with grpc.insecure_channel(system.write) as wch, grpc.insecure_channel(system.read) as rch:
        write, read = cpb_grpc.CommandServiceStub(wch), qpb_grpc.QueryServiceStub(rch)
        bad, good = _product(write, "Cup"), _product(write, "Plate")
        seq = asyncio.run(_poison(system.settings, bad.id))
        write.UpdateProduct(cpb.UpdateProductRequest(id=bad.id, name="Mug"), timeout=5)
        renamed = write.UpdateProduct(cpb.UpdateProductRequest(id=good.id, name="Dish"), timeout=5)

        # Refused from both projected sources, with the event named; the truth answers.
        # NOT_FOUND is "not projected yet" on a busy machine; only the refusal ends the wait.
        for source in PROJECTED:
            error = _until(
                lambda s=source: _refusal(_get(read, bad.id, s)),
                f"reads of {bad.id} not refused from source {source}",
                system,
            )
            backend = "redis" if source == qpb.SOURCE_PROJECTION else "pg"
            assert f"is parked in {backend}:products since its event seq={seq}" in error.details()
            assert f"cqrs projector unpark {backend}:products {bad.id}" in error.details()
        truth = _get(read, bad.id, qpb.SOURCE_WRITE_MODEL)
        assert truth.name == "Mug"
        # Every other product goes on.
        dish = read.GetProduct(
            qpb.GetProductRequest(id=good.id, consistency_token=renamed.consistency_token),
            timeout=5,
        )
        assert dish.name == "Dish"

        # An outside client sees the same answer.
        outside = subprocess.run(
            [grpcurl(), "-plaintext", "-d", f'{{"id": "{bad.id}"}}', system.read,
             "shop.v1.QueryService/GetProduct"],
            capture_output=True, text=True, timeout=20,
        )  # fmt: skip
        assert outside.returncode != 0
        assert "Code: FailedPrecondition" in outside.stderr, outside.stderr

        listed = system.cqrs("projector", "parked")
        assert listed.returncode == 1, listed.stdout + listed.stderr
        assert listed.stdout.count(f"Product {bad.id}") == 2  # redis: and pg:products
        assert f"seq={seq} ProductUpdated" in listed.stdout

        # Unparked before the fix: refused, still parked.
        refused = system.cqrs("projector", "unpark", "redis:products", bad.id, "--wait", "15")
        assert refused.returncode == 1, refused.stdout + refused.stderr
        assert "unpark refused:" in refused.stdout

        asyncio.run(_fix(system.settings, seq, bad.id))
        for name in ("redis:products", "pg:products"):
            done = system.cqrs("projector", "unpark", name, bad.id, "--wait", "15")
            assert done.returncode == 0, done.stdout + done.stderr + system.explain()
            assert "replayed: 1, refused: 0, waiting: 0" in done.stdout
        assert system.cqrs("projector", "parked").returncode == 0

        for source in PROJECTED:
            doc = _until(
                lambda s=source: not isinstance(d := _get(read, bad.id, s), grpc.RpcError) and d,
                f"{bad.id} still refused from source {source}",
                system,
            )
            assert (doc.name, doc.stock, doc.version) == (truth.name, 7, truth.version)
        nothing = system.cqrs("projector", "unpark", "redis:products", bad.id)
        assert nothing.returncode == 2 and "nothing parked" in nothing.stderr
