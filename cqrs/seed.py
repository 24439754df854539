"""``cqrs seed``: the demo dataset, created through the write side's domain.

Aggregates are built by the same domain code the commands use (so the events
in the outbox are exactly what ``CreateProduct``/``CreateCustomer``/``PlaceOrder``
record) and written in batched transactions with COPY.

By default everything happens now. With ``months`` > 0 the dataset has a history:
products and customers are created at the start of a span of that many calendar
months (the current one included) and the orders are placed across it in ascending
time, each customer's orders scattered over the span (so monthly figures have many
months, and new and returning customers vary). With ``usd_share`` > 0 that fraction
of the products is priced in USD; every order takes the items of one currency.
"""

from __future__ import annotations

import random
import sys
import time
from datetime import UTC, datetime

import asyncpg

from common.progress import Progress
from common.settings import Settings
from write_server.adapters.bulk import next_order_numbers, write_batch
from write_server.domain.aggregate import Aggregate
from write_server.domain.customer import Customer
from write_server.domain.order import Order
from write_server.domain.product import Product
from write_server.service_layer.service import new_uuid

BATCH = 1000
CATEGORIES = ("books", "garden", "kitchen", "music", "office", "outdoor", "sports", "tools", "toys")
ADJECTIVES = ("Blue", "Classic", "Compact", "Deluxe", "Eco", "Large", "Quiet", "Smart", "Solid")
NOUNS = ("Backpack", "Chair", "Kettle", "Lamp", "Mug", "Notebook", "Speaker", "Tent", "Watch")
FIRST = ("Ann", "Ben", "Cara", "Dev", "Eve", "Finn", "Gita", "Hugo", "Isla", "Jon", "Kai", "Lea")
LAST = ("Brown", "Campbell", "Khan", "Lopez", "MacLeod", "Novak", "Okafor", "Smith", "Wilson")
CITIES = ("Glasgow", "Edinburgh", "Aberdeen", "Dundee", "Inverness", "Stirling", "Perth")
CURRENCIES = ("EUR", "USD")  # the catalogue's, then the one a --usd-share of it uses
_PICK_ATTEMPTS = 20  # draws of an order's items before giving up on out-of-stock picks


def _now() -> datetime:
    return datetime.now(UTC)


def span_start(now: datetime, months: int) -> datetime:
    """The first instant (UTC) of the calendar month ``months - 1`` months before ``now``'s:
    a span of ``months`` calendar months ending at ``now`` (``now`` itself if 0)."""
    if months <= 0:
        return now
    index = now.year * 12 + now.month - 1 - (months - 1)
    return datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC)


def order_times(start: datetime, end: datetime, count: int) -> list[datetime]:
    """``count`` ascending instants spread evenly over (``start``, ``end``], the last at
    ``end``: the current month always has orders, even an hour after it began."""
    step = (end - start) / count if count else end - start
    return [start + step * (n + 1) for n in range(count)]


def make_product(rng: random.Random, now: datetime | None = None, currency: str = "EUR") -> Product:
    name = f"{rng.choice(ADJECTIVES)} {rng.choice(NOUNS)}"
    return Product.create(
        id=new_uuid(),
        now=now or _now(),
        name=name,
        description=f"{name}, item {rng.randrange(10**6):06d}",
        price_cents=rng.randrange(100, 100_000),
        currency=currency,
        category=rng.choice(CATEGORIES),
        stock=rng.randrange(100, 1000),
    )


def make_customer(rng: random.Random, n: int, run: str, now: datetime | None = None) -> Customer:
    first, last = rng.choice(FIRST), rng.choice(LAST)
    return Customer.create(
        id=new_uuid(),
        now=now or _now(),
        name=f"{first} {last}",
        email=f"{first}.{last}.{n}.{run}@example.com".lower(),
        address=f"{rng.randrange(1, 300)} High Street",
        city=rng.choice(CITIES),
        postal_code=f"G{rng.randrange(1, 99)} {rng.randrange(1, 9)}AB",
        country="GB",
    )


async def seed(
    settings: Settings,
    products: int,
    customers: int,
    orders_per_customer: int,
    random_seed: int = 42,
    months: int = 0,
    usd_share: float = 0.0,
) -> int:
    """Create the dataset; returns a process exit code."""
    if months < 0 or not 0.0 <= usd_share <= 1.0:
        print("cqrs seed: --months must be >= 0 and --usd-share in [0, 1]", file=sys.stderr)
        return 2
    rng = random.Random(random_seed)
    run = new_uuid()[-8:]
    metadata = {"user_agent": "cqrs-seed"}
    end = _now()
    history = span_start(end, months) if months else None
    conn = await asyncpg.connect(settings.asyncpg_dsn)
    started = time.monotonic()
    placed = 0
    try:
        catalogue: list[Product] = []
        bar = Progress("products", products, unit="")
        for start in range(0, products, BATCH):
            batch: list[Aggregate] = [
                make_product(rng, history, _currency(n, usd_share))
                for n in range(start, min(start + BATCH, products))
            ]
            await write_batch(conn, new=batch, changed_products=[], metadata=metadata)
            catalogue.extend(batch)  # type: ignore[arg-type]
            bar.advance(len(batch))
        bar.finish()

        people: list[Customer] = []
        bar = Progress("customers", customers, unit="")
        for start in range(0, customers, BATCH):
            count = min(BATCH, customers - start)
            batch = [make_customer(rng, start + i, run, history) for i in range(count)]
            await write_batch(conn, new=batch, changed_products=[], metadata=metadata)
            people.extend(batch)  # type: ignore[arg-type]
            bar.advance(len(batch))
        bar.finish()

        # One pool of products per currency (the whole catalogue when it has one).
        pools = {c: [p for p in catalogue if p.currency == c] for c in CURRENCIES}
        pools = {c: pool for c, pool in pools.items() if pool}
        buyers = [c for c in people for _ in range(orders_per_customer)] if catalogue else []
        times: list[datetime | None] = [None] * len(buyers)
        if history is not None:
            rng.shuffle(buyers)  # each customer's orders scattered over the span
            times = list(order_times(history, end, len(buyers)))
        bar = Progress("orders", len(buyers), unit="")
        for start in range(0, len(buyers), BATCH):
            chunk = buyers[start : start + BATCH]
            numbers = await next_order_numbers(conn, len(chunk))
            orders: list[Aggregate] = []
            touched: dict[str, Product] = {}
            for customer, number, at in zip(
                chunk, numbers, times[start : start + BATCH], strict=True
            ):
                items = _pick(rng, pools, usd_share)
                if not items:
                    continue
                orders.append(
                    Order.place(
                        id=new_uuid(),
                        order_number=number,
                        customer=customer,
                        items=items,
                        now=at or _now(),
                    )
                )
                touched.update({p.id: p for p, _ in items})
            await write_batch(
                conn, new=orders, changed_products=list(touched.values()), metadata=metadata
            )
            placed += len(orders)
            bar.advance(len(chunk))
        bar.finish()
        # Statistics now, not when autovacuum gets round to it: without them the planner
        # reads each of the projector's batches by sorting every later event (a bitmap
        # scan it expects to find a few rows), 100 times slower than the index order.
        await conn.execute("ANALYZE events")
    finally:
        await conn.close()
    elapsed = time.monotonic() - started
    span = f" over {months} months" if months else ""
    print(
        f"seeded {products:,} products, {customers:,} customers, {placed:,} orders{span} "
        f"in {elapsed:.1f}s",
        file=sys.stderr,
    )
    return 0


def _currency(n: int, usd_share: float) -> str:
    """The currency of the ``n``-th product: a ``usd_share`` of them, evenly interleaved,
    are USD (no randomness, so the rest of the dataset does not depend on it)."""
    return CURRENCIES[1] if int((n + 1) * usd_share) > int(n * usd_share) else CURRENCIES[0]


def _pick(
    rng: random.Random, pools: dict[str, list[Product]], usd_share: float
) -> list[tuple[Product, int]]:
    """An order's items: 1-5 products of one currency, quantity 1-5 (at most the stock);
    drawn again when every product drawn is out of stock; [] if that keeps happening."""
    if len(pools) > 1:
        pool = pools[CURRENCIES[1] if rng.random() < usd_share else CURRENCIES[0]]
    else:
        (pool,) = pools.values()
    for _ in range(_PICK_ATTEMPTS):
        picks = rng.sample(pool, k=min(rng.randint(1, 5), len(pool)))
        items = [(p, min(rng.randint(1, 5), p.stock)) for p in picks if p.stock > 0]
        if items:
            return items
    return []
