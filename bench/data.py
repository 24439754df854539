"""``cqrs bench data``: request data files drawn at random from the seeded database.

One JSON array per RPC scenario (``bench/data/<scenario>.json``), each element one
request in protobuf's JSON form, as ghz's ``data-file`` takes it (ghz cycles through
an array); the built-in driver reads the same files. Ids are sampled from the live
rows of the write model, so every get finds its entity.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg

from bench.catalogue import DATA_DIR, RPC_SCENARIOS, SOURCES, RpcScenario

SAMPLES = 1000
PAGE_SIZE = 50
ORDER_ITEMS = (1, 5)  # items per PlaceOrder, from the catalogue of well-stocked products


async def write_data_files(
    dsn: str, samples: int = SAMPLES, seed: int = 7, directory: Path = DATA_DIR
) -> list[Path]:
    """Write every RPC scenario's data file; returns them."""
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
    return _write(directory, rng, ids, categories, samples)


def _write(
    directory: Path, rng: random.Random, ids: Ids, categories: list[str], samples: int
) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for scenario in RPC_SCENARIOS.values():
        make = _REQUESTS[scenario.request]
        requests = [make(rng, ids, categories, scenario) for _ in range(samples)]
        path = directory / f"{scenario.name}.json"
        path.write_text(json.dumps(requests))
        written.append(path)
    return written


Ids = dict[str, list[str]]
Request = Callable[[random.Random, Ids, list[str], RpcScenario], dict[str, Any]]


def _source(scenario: RpcScenario) -> str:
    return SOURCES[scenario.source]


_REQUESTS: dict[str, Request] = {
    "health": lambda rng, ids, cats, s: {},
    "get": lambda rng, ids, cats, s: {"id": rng.choice(ids[s.entity]), "source": _source(s)},
    "page": lambda rng, ids, cats, s: {"page_size": PAGE_SIZE, "source": _source(s)},
    "category": lambda rng, ids, cats, s: {
        "category": rng.choice(cats),
        "page_size": PAGE_SIZE,
        "source": _source(s),
    },
    "customer": lambda rng, ids, cats, s: {
        "customer_id": rng.choice(ids["customers"]),
        "page_size": PAGE_SIZE,
        "source": _source(s),
    },
    "create_product": lambda rng, ids, cats, s: {
        "name": f"bench product {rng.randrange(10**6)}",
        "price_cents": rng.randrange(100, 10**5),
        "currency": "EUR",
        "category": rng.choice(cats),
        "stock": 1000,
    },
    "update_product": lambda rng, ids, cats, s: {
        "id": rng.choice(ids["products"]),
        "price_cents": rng.randrange(100, 10**5),
    },
    "place_order": lambda rng, ids, cats, s: {
        "customer_id": rng.choice(ids["customers"]),
        "items": [
            {"product_id": p, "quantity": 1}
            for p in rng.sample(ids["products"][:200], rng.randint(*ORDER_ITEMS))
        ],
    },
}
