"""Group commit against real PostgreSQL (write_server/adapters/group_commit.py).

The property: random programs of concurrent commands (stale and current expected versions,
two copies of one request inside a batch, orders racing for the last stock, orders and
updates for customers being deleted), run at once through the group-committing service
(small batches, two executors, so batches run side by side), end in the state that running
their successes one by one, in the order the event log shows, gives on another database;
every success is one there too, with the same version; every failure is one the rules
allow (a stale version, no stock left, a deleted customer). Then batches seen from
outside: the batch-size histogram counts shared transactions, and a command the batch
gives way for (same aggregate twice in one batch) runs in the next.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from common.errors import AppError, ConcurrencyConflict, FailedPrecondition, NotFound
from common.positions import Position, decode_token
from common.settings import Settings
from tests.conftest import fresh_settings
from tests.support.events import out_of_log_order
from write_server.adapters.group_commit import GroupCommit, GroupConfig
from write_server.adapters.postgres_uow import OrderNumbers, PostgresUnitOfWork, open_pool
from write_server.domain import commands as c
from write_server.service_layer.service import CommandResult, CommandService

pytestmark = pytest.mark.integration

PRODUCTS, CUSTOMERS, STOCK = 3, 3, 4

ops = st.one_of(
    st.tuples(
        st.just("price"), st.integers(0, PRODUCTS - 1), st.integers(1, 999), st.integers(0, 3)
    ),
    st.tuples(
        st.just("order"),
        st.integers(0, CUSTOMERS - 1),
        st.integers(0, PRODUCTS - 1),
        st.integers(1, 3),
    ),
    st.tuples(st.just("rename"), st.integers(0, CUSTOMERS - 1), st.text("abcxyz", min_size=1)),
    st.tuples(st.just("delete"), st.integers(0, CUSTOMERS - 1)),
    st.tuples(st.just("again"), st.integers(0, 40)),  # a second copy of an earlier command
)
PROGRAMS = st.lists(ops, min_size=2, max_size=30)


@dataclasses.dataclass
class World:
    products: list[str]
    customers: list[str]


def _ids() -> Iterator[str]:
    while True:
        yield str(uuid.uuid4())


def _service(pool: asyncpg.Pool, group: GroupConfig | None, ids: Iterator[str]) -> CommandService:
    numbers = OrderNumbers()
    if group is not None:
        return CommandService(GroupCommit(pool, numbers, group).unit_of_work, new_id=ids.__next__)
    return CommandService(lambda: PostgresUnitOfWork(pool, numbers), new_id=ids.__next__)


async def _seed(service: CommandService) -> World:
    products = [
        (await service.execute(c.CreateProduct(name=f"p{i}", price_cents=100, currency="EUR",
                                               stock=STOCK))).id
        for i in range(PRODUCTS)
    ]  # fmt: skip
    customers = [
        (await service.execute(c.CreateCustomer(name=f"c{i}", email=f"{uuid.uuid4()}@x.org"))).id
        for i in range(CUSTOMERS)
    ]
    return World(products, customers)


def _commands(program: list[tuple[Any, ...]], world: World) -> list[c.Command]:
    made: list[c.Command] = []
    for n, op in enumerate(program):
        rid = f"r{n}-{uuid.uuid4().hex[:6]}"
        match op:
            case ("price", p, cents, version):
                changes = {"price_cents": cents}
                made.append(c.UpdateProduct(id=world.products[p], changes=changes,
                                            expected_version=version, request_id=rid))  # fmt: skip
            case ("order", who, p, qty):
                items = (c.OrderItemRequest(world.products[p], qty),)
                made.append(c.PlaceOrder(customer_id=world.customers[who], items=items,
                                         request_id=rid))  # fmt: skip
            case ("rename", who, name):
                made.append(c.UpdateCustomer(id=world.customers[who], changes={"name": name},
                                             request_id=rid))  # fmt: skip
            case ("delete", who):
                made.append(c.DeleteCustomer(id=world.customers[who], request_id=rid))
            case ("again", k):
                if made:
                    made.append(made[k % len(made)])
    return made


async def _outcome(service: CommandService, command: c.Command) -> CommandResult | AppError:
    try:
        return await service.execute(command)
    except AppError as exc:
        return exc


async def _state(conn: asyncpg.Connection, world: World) -> dict[str, Any]:
    products = await conn.fetch(
        "SELECT id::text, stock, price_cents, version FROM products WHERE id = ANY($1::uuid[])"
        " ORDER BY id",
        world.products,
    )
    customers = await conn.fetch(
        "SELECT id::text, name, version, deleted_at IS NOT NULL AS deleted FROM customers"
        " WHERE id = ANY($1::uuid[]) ORDER BY id",
        world.customers,
    )
    orders = await conn.fetch(
        "SELECT o.customer_id::text, o.total_cents, i.product_id::text, i.quantity"
        " FROM orders o JOIN order_items i ON i.order_id = o.id"
        " WHERE o.customer_id = ANY($1::uuid[])",
        world.customers,
    )
    return {
        "products": [tuple(r) for r in products],
        "customers": [tuple(r) for r in customers],
        "orders": sorted(tuple(r) for r in orders),
    }


async def run_example(grouped: Settings, serial: Settings, program: list[tuple[Any, ...]]) -> None:
    seed_ids = [str(uuid.uuid4()) for _ in range(PRODUCTS + CUSTOMERS)]
    pools = [await open_pool(grouped), await open_pool(serial)]
    try:
        batching = _service(pools[0], GroupConfig(max_batch=8, executors=2), _ids())
        world = await _seed(_service(pools[0], None, iter(seed_ids)))
        assert world == await _seed(_service(pools[1], None, iter(seed_ids)))
        program_commands = _commands(program, world)
        outcomes = await asyncio.gather(*(_outcome(batching, x) for x in program_commands))

        # Two copies of one request that both succeeded: one execution, one reply.
        by_request: dict[str, list[CommandResult]] = {}
        for command, outcome in zip(program_commands, outcomes, strict=True):
            if isinstance(outcome, CommandResult):
                by_request.setdefault(command.request_id, []).append(outcome)
        for replies in by_request.values():
            assert all(r == replies[0] for r in replies), replies

        # The successes, one by one in the log's order, elsewhere: the same replies.
        # (One that changed nothing, e.g. a price set to what it was, wrote no event and
        # has no place in the log: it is left out.)
        done = {
            command.request_id: (command, outcome)
            for command, outcome in zip(program_commands, outcomes, strict=True)
            if isinstance(outcome, CommandResult) and outcome.consistency_token
        }

        def position(item: tuple[c.Command, CommandResult]) -> Position:
            found = decode_token(item[1].consistency_token)
            assert found is not None
            return found

        one_by_one = _service(pools[1], None, _ids())
        for command, outcome in sorted(done.values(), key=position):
            again = await one_by_one.execute(command)
            assert again.version == outcome.version, (command, outcome, again)

        async with pools[0].acquire() as a, pools[1].acquire() as b:
            assert await _state(a, world) == await _state(b, world)
            assert await out_of_log_order(a) == []  # the projector's order holds
            deleted = {
                r["id"]
                for r in await a.fetch(
                    "SELECT id::text FROM customers WHERE id = ANY($1::uuid[])"
                    " AND deleted_at IS NOT NULL",
                    world.customers,
                )
            }

        # Every failure is one the rules allow.
        for command, outcome in zip(program_commands, outcomes, strict=True):
            if isinstance(outcome, CommandResult):
                continue
            if isinstance(outcome, ConcurrencyConflict):
                assert isinstance(command, c.UpdateProduct) and command.expected_version > 0
            elif isinstance(outcome, FailedPrecondition):
                assert isinstance(command, c.PlaceOrder), outcome
                assert "stock" in outcome.message, outcome
            elif isinstance(outcome, NotFound):
                target = getattr(command, "customer_id", getattr(command, "id", ""))
                assert target in deleted, (command, outcome)
            else:
                raise AssertionError(f"{command}: unexpected {outcome!r}")
    finally:
        for pool in pools:
            await pool.close()


@pytest.fixture
async def serial_settings(template_database: str) -> AsyncIterator[Settings]:
    """A second database for the one-by-one replay."""
    async with fresh_settings(template_database) as s:
        yield s


@hsettings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(program=PROGRAMS)
def test_concurrent_programs_equal_their_log_order_one_by_one(
    settings: Settings, serial_settings: Settings, program: list[tuple[Any, ...]]
) -> None:
    asyncio.run(run_example(settings, serial_settings, program))


def _batches(le: str) -> float:
    return REGISTRY.get_sample_value("cqrs_write_batch_commands_bucket", {"le": le}) or 0.0


async def test_commands_that_arrive_together_share_a_transaction(settings: Settings) -> None:
    """32 creates at once through one executor: fewer transactions than commands (their
    events share transaction ids), and each reply's token is in the log."""
    pool = await open_pool(settings)
    try:
        service = _service(pool, GroupConfig(max_batch=32, executors=1), _ids())
        larger_before = _batches("+Inf") - _batches("1.0")
        results = await asyncio.gather(
            *(
                service.execute(c.CreateProduct(name=f"p{n}", price_cents=1, currency="EUR"))
                for n in range(32)
            )
        )
        xids = await pool.fetchval(
            "SELECT count(DISTINCT xid) FROM events WHERE aggregate_id = ANY($1::uuid[])",
            [r.id for r in results],
        )
        assert xids < 32
        assert _batches("+Inf") - _batches("1.0") > larger_before
        tokens = [decode_token(r.consistency_token) for r in results]
        logged = {
            Position(int(r["xid"]), r["seq"])
            for r in await pool.fetch(
                "SELECT xid::text AS xid, seq FROM events WHERE aggregate_id = ANY($1::uuid[])",
                [r.id for r in results],
            )
        }
        assert set(tokens) == logged
    finally:
        await pool.close()


async def test_the_same_aggregate_twice_in_a_batch_runs_one_after_the_other(
    settings: Settings,
) -> None:
    """Two updates of one product queued together: the second gives way and runs in the
    next batch, after the first committed (its version follows; its xid is larger)."""
    pool = await open_pool(settings)
    try:
        service = _service(pool, GroupConfig(max_batch=32, executors=1), _ids())
        made = await service.execute(c.CreateProduct(name="p", price_cents=1, currency="EUR"))
        updates = [
            c.UpdateProduct(id=made.id, changes={"price_cents": n}, expected_version=0)
            for n in range(2, 8)
        ]
        results = await asyncio.gather(*(service.execute(u) for u in updates))
        assert sorted(r.version for r in results) == list(range(2, 8))
        rows = await pool.fetch(
            "SELECT aggregate_version, xid::text::bigint AS xid FROM events"
            " WHERE aggregate_id = $1 ORDER BY aggregate_version",
            uuid.UUID(made.id),
        )
        xids = [r["xid"] for r in rows]
        assert xids == sorted(xids) and len(set(xids[1:])) == len(xids) - 1
    finally:
        await pool.close()


def test_a_batch_never_exceeds_the_subtransaction_cache() -> None:
    numbers = OrderNumbers()
    with pytest.raises(ValueError, match=r"1\.\.60"):
        GroupCommit(None, numbers, GroupConfig(max_batch=61))  # type: ignore[arg-type]
