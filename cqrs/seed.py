"""``cqrs seed``: the demo dataset, created through the write side's domain.

Aggregates are built by the same domain code the commands use (so the events
in the outbox are exactly what ``CreateProduct``/``CreateCustomer``/``PlaceOrder``
record) and written in batched transactions with COPY.
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


def _now() -> datetime:
    return datetime.now(UTC)


def make_product(rng: random.Random) -> Product:
    name = f"{rng.choice(ADJECTIVES)} {rng.choice(NOUNS)}"
    return Product.create(
        id=new_uuid(),
        now=_now(),
        name=name,
        description=f"{name}, item {rng.randrange(10**6):06d}",
        price_cents=rng.randrange(100, 100_000),
        currency="EUR",
        category=rng.choice(CATEGORIES),
        stock=rng.randrange(100, 1000),
    )


def make_customer(rng: random.Random, n: int, run: str) -> Customer:
    first, last = rng.choice(FIRST), rng.choice(LAST)
    return Customer.create(
        id=new_uuid(),
        now=_now(),
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
) -> int:
    """Create the dataset; returns a process exit code."""
    rng = random.Random(random_seed)
    run = new_uuid()[-8:]
    metadata = {"user_agent": "cqrs-seed"}
    conn = await asyncpg.connect(settings.asyncpg_dsn)
    started = time.monotonic()
    try:
        catalogue: list[Product] = []
        bar = Progress("products", products, unit="")
        for start in range(0, products, BATCH):
            batch: list[Aggregate] = [
                make_product(rng) for _ in range(min(BATCH, products - start))
            ]
            await write_batch(conn, new=batch, changed_products=[], metadata=metadata)
            catalogue.extend(batch)  # type: ignore[arg-type]
            bar.advance(len(batch))
        bar.finish()

        people: list[Customer] = []
        bar = Progress("customers", customers, unit="")
        for start in range(0, customers, BATCH):
            count = min(BATCH, customers - start)
            batch = [make_customer(rng, start + i, run) for i in range(count)]
            await write_batch(conn, new=batch, changed_products=[], metadata=metadata)
            people.extend(batch)  # type: ignore[arg-type]
            bar.advance(len(batch))
        bar.finish()

        total_orders = customers * orders_per_customer if catalogue else 0
        bar = Progress("orders", total_orders, unit="")
        buyers = [c for c in people for _ in range(orders_per_customer)] if catalogue else []
        for start in range(0, len(buyers), BATCH):
            chunk = buyers[start : start + BATCH]
            numbers = await next_order_numbers(conn, len(chunk))
            orders: list[Aggregate] = []
            touched: dict[str, Product] = {}
            for customer, number in zip(chunk, numbers, strict=True):
                picks = rng.sample(catalogue, k=min(rng.randint(1, 5), len(catalogue)))
                items = [(p, min(rng.randint(1, 5), p.stock)) for p in picks if p.stock > 0]
                if not items:
                    continue
                orders.append(
                    Order.place(
                        id=new_uuid(),
                        order_number=number,
                        customer=customer,
                        items=items,
                        now=_now(),
                    )
                )
                touched.update({p.id: p for p, _ in items})
            await write_batch(
                conn, new=orders, changed_products=list(touched.values()), metadata=metadata
            )
            bar.advance(len(chunk))
        bar.finish()
    finally:
        await conn.close()
    elapsed = time.monotonic() - started
    print(
        f"seeded {products:,} products, {customers:,} customers, {total_orders:,} orders "
        f"in {elapsed:.1f}s",
        file=sys.stderr,
    )
    return 0
