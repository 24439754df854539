"""PlaceOrder locks the customer it reads, so the log never contradicts the customer.

``place_order`` (write_server/service_layer/handlers.py) reads the customer's name
and email into OrderPlaced but does not write the customer row; only its advisory
lock on the customer serializes it with UpdateCustomer and DeleteCustomer. Without
that lock (the guarded bug: ``uow.lock([*quantities])``) a rename or a delete can
take its xid after the order read the customer but before the order took its own
xid, so in (xid, seq) order the OrderPlaced comes after the CustomerUpdated /
CustomerDeleted while carrying what it read before them.

``test_orders_race_renames_and_deletes_of_their_customer`` runs many rounds of
concurrent PlaceOrder / UpdateCustomer(name) / DeleteCustomer on one customer through
the real service layer on PostgreSQL, then proves

1. no order is placed for a deleted customer: every OrderPlaced comes before its
   customer's CustomerDeleted (if any) in (xid, seq) order;
2. every OrderPlaced carries the customer's name as of its position in the log;
3. consequently the projections agree with the write model (``verify`` finds no
   difference): an OrderPlaced with the old name applied after the rename would
   leave the old ``customer_name`` on the order while the write model shows the new.
"""

from __future__ import annotations

import asyncio
import io
import json
import random
from collections import Counter

import pytest

from common import events as ev
from common.errors import ConcurrencyConflict, FailedPrecondition, NotFound
from common.settings import Settings
from projector.bootstrap import App
from projector.verify import verify
from tests.support.projector import wait_applied
from write_server.adapters.postgres_uow import open_pool
from write_server.bootstrap import command_service
from write_server.domain import commands
from write_server.service_layer.service import CommandService

pytestmark = pytest.mark.integration

ROUNDS = 50
ORDERS_PER_ROUND = 3
# A command that lost the race is refused with one of these; anything else is a failure.
EXPECTED_REFUSALS = (NotFound, FailedPrecondition, ConcurrencyConflict)


async def _race(service: CommandService, products: list[str], n: int) -> Counter[str]:
    """One customer; its orders, a rename and (every other round) a delete, all at once."""
    created = await service.execute(
        commands.CreateCustomer(name=f"customer {n}", email=f"c{n}@example.com", city="Oslo")
    )
    batch: list[commands.Command] = [
        commands.PlaceOrder(customer_id=created.id, items=(commands.OrderItemRequest(p, 1),))
        for p in products
    ]
    batch.append(commands.UpdateCustomer(id=created.id, changes={"name": f"customer {n} renamed"}))
    if n % 2 == 0:
        batch.append(commands.DeleteCustomer(id=created.id))
    # Vary who starts first; each order has its own product, so orders never wait on
    # each other, only (with the customer locked) on the rename and the delete.
    random.Random(n).shuffle(batch)
    results = await asyncio.gather(*(service.execute(cmd) for cmd in batch), return_exceptions=True)
    outcomes: Counter[str] = Counter()
    for cmd, result in zip(batch, results, strict=True):
        if isinstance(result, BaseException) and not isinstance(result, EXPECTED_REFUSALS):
            raise result
        refused = "refused" if isinstance(result, BaseException) else "done"
        outcomes[f"{type(cmd).__name__} {refused}"] += 1
    return outcomes


async def _contradictions(app: App) -> list[str]:
    """Every OrderPlaced that, in (xid, seq) order, follows its customer's deletion or
    carries a name other than the customer's latest one before it."""
    rows = await app.pool.fetch(
        "SELECT xid::text::bigint AS xid, seq, aggregate_id::text AS id, event_type, "
        "payload::text AS payload FROM events WHERE aggregate_type = ANY($1) ORDER BY xid, seq",
        [ev.CUSTOMER, ev.ORDER],
    )
    names: dict[str, str] = {}
    deleted: set[str] = set()
    found: list[str] = []
    for row in rows:
        payload = json.loads(row["payload"])
        kind, at = row["event_type"], f"({row['xid']}, {row['seq']})"
        if kind == ev.CUSTOMER_CREATED:
            names[row["id"]] = payload["name"]
        elif kind == ev.CUSTOMER_UPDATED and "name" in payload["changes"]:
            names[row["id"]] = payload["changes"]["name"]
        elif kind == ev.CUSTOMER_DELETED:
            deleted.add(row["id"])
        elif kind == ev.ORDER_PLACED:
            customer, name = payload["customer"]["id"], payload["customer"]["name"]
            if customer in deleted:
                found.append(f"order {row['id']} at {at}: customer {customer} already deleted")
            if name != names[customer]:
                found.append(
                    f"order {row['id']} at {at}: customer name {name!r}, "
                    f"but the customer was {names[customer]!r} by then"
                )
    return found


async def test_orders_race_renames_and_deletes_of_their_customer(
    settings: Settings, app: App
) -> None:
    pool = await open_pool(settings)
    service = command_service(pool)
    try:
        products = [
            (
                await service.execute(
                    commands.CreateProduct(
                        name=f"p{i}", price_cents=100, currency="EUR", stock=10**6
                    )
                )
            ).id
            for i in range(ORDERS_PER_ROUND)
        ]
        outcomes: Counter[str] = Counter()
        for n in range(ROUNDS):
            outcomes += await _race(service, products, n)
    finally:
        await pool.close()
    found = await _contradictions(app)
    assert not found, f"{len(found)} orders contradict the log:\n" + "\n".join(found[:10])
    # The premise: the commands really raced (orders both won and lost against a delete).
    assert outcomes["PlaceOrder done"] and outcomes["PlaceOrder refused"], outcomes

    stop = asyncio.Event()
    run = asyncio.create_task(app.projector().run(stop))
    try:
        await wait_applied(app)
    finally:
        stop.set()
        await asyncio.wait_for(run, 10)
    report = io.StringIO()
    assert await verify(app.consumers, app.pool, out=report) == 0, report.getvalue()
