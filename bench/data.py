"""``cqrs bench data``: request data files drawn at random from the seeded database.

One JSON array per RPC scenario (``bench/data/<scenario>.json``), each element one
request in protobuf's JSON form, as ghz's ``data-file`` takes it (ghz cycles through
an array); the built-in driver reads the same files. Ids are sampled from the live
rows of the write model, so every get finds its entity; the analytics requests ask
about customers and products that have orders, and for every month that has orders.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import asyncpg

from bench.catalogue import DATA_DIR, RPC_SCENARIOS, SOURCES, RpcScenario

SAMPLES = 1000
PAGE_SIZE = 50
ORDER_ITEMS = (1, 5)  # items per PlaceOrder, from the catalogue of well-stocked products
TOP_LIMIT = 10  # ListTopProducts / ListTopCustomers
MAX_MONTHS = 120  # what one GetMonthlyRevenue may span
TOP_PRODUCTS_BY = ("TOP_PRODUCTS_BY_REVENUE", "TOP_PRODUCTS_BY_UNITS")

# Ids the analytics requests draw from: customers and products with orders (live ones).
_ANALYTICS_IDS = {
    "ordering_customers": """
        SELECT c.id FROM customers c
        WHERE c.deleted_at IS NULL AND EXISTS (SELECT 1 FROM orders o WHERE o.customer_id = c.id)
        ORDER BY random() LIMIT $1""",
    "sold_products": """
        SELECT p.id FROM products p
        WHERE p.deleted_at IS NULL
          AND EXISTS (SELECT 1 FROM order_items i WHERE i.product_id = p.id)
        ORDER BY random() LIMIT $1""",
}
_MONTHS = """
    SELECT to_char(min(created_at) AT TIME ZONE 'UTC', 'YYYY-MM') AS first,
           to_char(max(created_at) AT TIME ZONE 'UTC', 'YYYY-MM') AS last
    FROM orders"""


async def write_data_files(
    dsn: str,
    samples: int = SAMPLES,
    seed: int = 7,
    directory: Path = DATA_DIR,
    scenarios: Iterable[RpcScenario] | None = None,
) -> list[Path]:
    """Write the data file of every RPC scenario (or of ``scenarios``); returns them."""
    rng = random.Random(seed)
    conn = await asyncpg.connect(dsn)
    try:
        ids = {
            table: [
                str(r["id"])
                for r in await conn.fetch(
                    f"SELECT id FROM {table} WHERE deleted_at IS NULL ORDER BY random() LIMIT $1",
                    samples,
                )
            ]
            for table in ("products", "customers", "orders")
        }
        for key, query in _ANALYTICS_IDS.items():
            ids[key] = [str(r["id"]) for r in await conn.fetch(query, samples)]
        span = await conn.fetchrow(_MONTHS)
        ids["months"] = month_range(span["first"], span["last"]) if span["first"] else []
        categories = [
            r["category"]
            for r in await conn.fetch(
                "SELECT DISTINCT category FROM products WHERE deleted_at IS NULL AND category <> ''"
            )
        ]
    finally:
        await conn.close()
    missing = [t for t, found in ids.items() if not found]
    if missing or not categories:
        raise RuntimeError(f"no {', '.join(missing) or 'categories'} to draw from: seed first")
    chosen = list(RPC_SCENARIOS.values()) if scenarios is None else list(scenarios)
    return write_requests(directory, rng, ids, categories, samples, chosen)


def month_range(first: str, last: str) -> list[str]:
    """Every month ``YYYY-MM`` from ``first`` to ``last`` (at most the last MAX_MONTHS)."""

    def index(month: str) -> int:
        year, number = month.split("-")
        return int(year) * 12 + int(number) - 1

    end = index(last)
    start = max(index(first), end - MAX_MONTHS + 1)
    return [f"{n // 12:04d}-{n % 12 + 1:02d}" for n in range(start, end + 1)]


def write_requests(
    directory: Path,
    rng: random.Random,
    ids: Ids,
    categories: list[str],
    samples: int,
    scenarios: list[RpcScenario],
) -> list[Path]:
    """Write ``samples`` requests per scenario (``bench/data/<name>.json``); the files."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for scenario in scenarios:
        make = _REQUESTS[scenario.request]
        requests = [make(rng, ids, categories, scenario, n) for n in range(samples)]
        path = directory / f"{scenario.name}.json"
        path.write_text(json.dumps(requests))
        written.append(path)
    return written


Ids = dict[str, list[str]]
# (rng, ids, categories, scenario, index of the request in its file) -> the request
Request = Callable[[random.Random, Ids, list[str], RpcScenario, int], dict[str, Any]]


def _source(scenario: RpcScenario) -> str:
    return SOURCES[scenario.source]


_REQUESTS: dict[str, Request] = {
    "health": lambda rng, ids, cats, s, n: {},
    "get": lambda rng, ids, cats, s, n: {"id": rng.choice(ids[s.entity]), "source": _source(s)},
    "page": lambda rng, ids, cats, s, n: {"page_size": PAGE_SIZE, "source": _source(s)},
    "category": lambda rng, ids, cats, s, n: {
        "category": rng.choice(cats),
        "page_size": PAGE_SIZE,
        "source": _source(s),
    },
    "customer": lambda rng, ids, cats, s, n: {
        "customer_id": rng.choice(ids["customers"]),
        "page_size": PAGE_SIZE,
        "source": _source(s),
    },
    "create_product": lambda rng, ids, cats, s, n: {
        "name": f"bench product {rng.randrange(10**6)}",
        "price_cents": rng.randrange(100, 10**5),
        "currency": "EUR",
        "category": rng.choice(cats),
        "stock": 1000,
    },
    "update_product": lambda rng, ids, cats, s, n: {
        "id": rng.choice(ids["products"]),
        "price_cents": rng.randrange(100, 10**5),
    },
    "place_order": lambda rng, ids, cats, s, n: {
        "customer_id": rng.choice(ids["customers"]),
        "items": [
            {"product_id": p, "quantity": 1}
            for p in rng.sample(ids["products"][:200], rng.randint(*ORDER_ITEMS))
        ],
    },
    "customer_stats": lambda rng, ids, cats, s, n: {
        "customer_id": rng.choice(ids["ordering_customers"]),
        "source": _source(s),
    },
    "product_sales": lambda rng, ids, cats, s, n: {
        "product_id": rng.choice(ids["sold_products"]),
        "source": _source(s),
    },
    "top_products": lambda rng, ids, cats, s, n: {
        "by": TOP_PRODUCTS_BY[n % len(TOP_PRODUCTS_BY)],
        "limit": TOP_LIMIT,
        "source": _source(s),
    },
    "top_customers": lambda rng, ids, cats, s, n: {"limit": TOP_LIMIT, "source": _source(s)},
    "monthly_revenue": lambda rng, ids, cats, s, n: {
        "from_month": ids["months"][0],
        "to_month": ids["months"][-1],
        "source": _source(s),
    },
}
