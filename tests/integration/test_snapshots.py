"""Snapshots for time travel on real PostgreSQL: the ``pg:snapshots`` consumer writes them
from the log, and ``Get*AsOf`` from a snapshot equals ``Get*AsOf`` replayed from the first
event, for random histories and instants (property), and replays at most the events after
one (a cap a replay from the start would pass)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from common import events as ev
from common.settings import Settings
from projector.rebuild import catch_up
from projector.snapshots import SnapshotWriter
from read_server.history.as_of import Replayed, TooManyEvents, as_of
from tests.support.projector import below_the_horizon
from write_server.adapters.postgres_uow import open_pool
from write_server.bootstrap import command_service
from write_server.domain import commands as c

pytestmark = pytest.mark.integration

EVERY = 3
T0 = datetime(2026, 5, 1, tzinfo=UTC)

# A history: steps on one product, one customer and that customer's order, each after a
# pause of 0-90 s (0: several events at one instant); the clock may also step back a
# little, as command clocks do under contention.
steps = st.lists(
    st.tuples(
        st.sampled_from(["price", "price", "rename_customer", "order", "delete_product"]),
        st.integers(-2, 90),
    ),
    min_size=1,
    max_size=25,
)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


async def _history(service: Any, clock: Clock, program: list[tuple[str, int]]) -> list[Any]:
    """Run ``program``; the aggregates it made as (aggregate type, id)."""
    product = (await service.execute(c.CreateProduct(name="p", price_cents=1, currency="EUR",
                                                     stock=10_000))).id  # fmt: skip
    customer = (await service.execute(c.CreateCustomer(name="n", email=f"{product}@x.org"))).id
    item = c.OrderItemRequest(product_id=product, quantity=1)
    order = (await service.execute(c.PlaceOrder(customer_id=customer, items=(item,)))).id
    actions = iter(["confirm", "ship", "deliver"])
    deleted = False
    for n, (step, pause) in enumerate(program):
        clock.now += timedelta(seconds=pause)
        if step == "price" and not deleted:
            await service.execute(c.UpdateProduct(id=product, changes={"price_cents": 2 + n}))
        elif step == "rename_customer":
            await service.execute(c.UpdateCustomer(id=customer, changes={"name": f"n{n}"}))
        elif step == "order" and (action := next(actions, None)) is not None:
            await service.execute(c.ChangeOrderStatus(id=order, action=action))
        elif step == "delete_product" and not deleted:
            await service.execute(c.DeleteProduct(id=product))
            deleted = True
    return [(ev.PRODUCT, product), (ev.CUSTOMER, customer), (ev.ORDER, order)]


async def _as_of_all(
    pool: asyncpg.Pool, aggregates: list[Any], instants: list[datetime], cap: int = 0
) -> list[tuple[bytes | None, datetime | None]]:
    found: list[tuple[bytes | None, datetime | None]] = []
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
        for kind, ident in aggregates:
            for at in instants:
                replayed: Replayed = await as_of(conn, kind, ident, at, cap)
                doc = replayed.document
                found.append((doc.SerializeToString() if doc else None, replayed.deleted_at))
    return found


async def _example(settings: Settings, clock: Clock, program: list[tuple[str, int]]) -> None:
    pool = await open_pool(settings)
    try:
        clock.now += timedelta(days=1)  # every example's history after the last one's
        start = clock.now
        aggregates = await _history(command_service(pool, clock=clock), clock, program)
        end = clock.now
        span = max((end - start).total_seconds(), 1.0)
        instants = [start - timedelta(seconds=1), end + timedelta(seconds=1)]
        instants += [start + timedelta(seconds=span * k / 7) for k in range(8)]
        instants += [start + timedelta(seconds=s) for s in range(0, int(span) + 1, 13)]
        from_start = await _as_of_all(pool, aggregates, instants)
        await below_the_horizon(pool)  # a concurrent test's transaction may hold it back
        await catch_up(SnapshotWriter(pool, EVERY), pool, batch_size=50)
        ids = [ident for _, ident in aggregates]
        made = await pool.fetchval(
            "SELECT count(*) FROM read.snapshots WHERE aggregate_id = ANY($1::uuid[])", ids
        )
        due = await pool.fetchval(
            "SELECT count(*) FROM events WHERE aggregate_id = ANY($1::uuid[])"
            " AND aggregate_version % $2 = 0",
            ids,
            EVERY,
        )
        assert made == due  # one per EVERY events of each aggregate
        from_snapshots = await _as_of_all(pool, aggregates, instants)
        assert from_snapshots == from_start
    finally:
        await pool.close()


_CLOCKS: dict[str, Clock] = {}


@hsettings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(program=steps)
def test_as_of_from_a_snapshot_equals_as_of_from_the_first_event(
    settings: Settings, program: list[tuple[str, int]]
) -> None:
    clock = _CLOCKS.setdefault(settings.database_url, Clock())
    asyncio.run(_example(settings, clock, program))


async def test_a_snapshot_bounds_what_time_travel_replays(settings: Settings) -> None:
    pool = await open_pool(settings)
    clock = Clock()
    try:
        service = command_service(pool, clock=clock)
        made = await service.execute(
            c.CreateProduct(name="p", price_cents=1, currency="EUR", stock=1)
        )
        for n in range(2, 31):
            clock.now += timedelta(seconds=1)
            await service.execute(c.UpdateProduct(id=made.id, changes={"price_cents": n}))
        late = clock.now + timedelta(seconds=5)
        async with pool.acquire() as conn, conn.transaction():
            with pytest.raises(TooManyEvents):  # 30 events, 5 at most: from the start, refused
                await as_of(conn, ev.PRODUCT, made.id, late, max_events=5)
        await below_the_horizon(pool)
        await catch_up(SnapshotWriter(pool, 5), pool, batch_size=50)
        async with pool.acquire() as conn, conn.transaction():
            replayed = await as_of(conn, ev.PRODUCT, made.id, late, max_events=5)
            assert replayed.document is not None
            assert replayed.document.price_cents == 30  # type: ignore[attr-defined]
            assert replayed.document.version == 30  # type: ignore[attr-defined]
            # Before the last snapshot: from the one before it.
            middle = await as_of(conn, ev.PRODUCT, made.id, T0 + timedelta(seconds=12), 5)
            assert middle.document is not None and middle.document.version == 13  # type: ignore[attr-defined]
    finally:
        await pool.close()
