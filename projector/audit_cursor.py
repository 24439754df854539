"""The continuous audit's round-robin over one entity's ids (:mod:`projector.audit`).

A keyset cursor: each call takes the next ``n`` ids after the last one taken, in the
order the fetch function defines (the write table's primary key), and wraps around to
the first ids when it reaches the end. So every id that exists for a whole lap is taken
once per lap, and a lap takes ``documents / n`` calls: at ``rate`` ids a second, every
document is compared within ``documents / rate`` seconds. Ids created meanwhile are taken
when the cursor passes them; deleted ones simply stop coming.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import asyncpg

from common.entities import Entity

# The next ``limit`` ids after ``after`` (``None``: from the first), in order.
FetchIds = Callable[[str | None, int], Awaitable[list[str]]]


class RoundRobin:
    """Where one entity's audit stands: the last id taken, and how many laps it finished."""

    def __init__(self) -> None:
        self.after: str | None = None
        self.laps = 0

    async def take(self, n: int, fetch: FetchIds) -> list[str]:
        """The next ``n`` ids (fewer only when there are fewer ids at all), wrapping around."""
        if n <= 0:
            return []
        ids = await fetch(self.after, n)
        if len(ids) < n:
            # The end of the ids: this lap is over, the rest of ``n`` starts the next one.
            if self.after is not None or ids:
                self.laps += 1
            if self.after is not None:
                taken = set(ids)
                # Fewer ids than n in all: the start comes round to what was taken; once each.
                ids += [i for i in await fetch(None, n - len(ids)) if i not in taken]
        self.after = ids[-1] if ids else None
        return ids


def write_model_ids(pool: asyncpg.Pool, kind: Entity) -> FetchIds:
    """``kind``'s ids in the write model, live or deleted (a deleted one must be absent from
    the stores: it is compared too), in primary-key order."""
    model = kind.write_model
    # The entity's own SELECT (its tables and the column aliases verify compares): an index
    # scan of the primary key that stops after ``limit`` rows.
    first = f"SELECT x.id::text AS id FROM ({model.select} ORDER BY {model.alias}id LIMIT $1) x ORDER BY x.id"
    then = (
        f"SELECT x.id::text AS id FROM ({model.select} WHERE {model.alias}id > $2::uuid "
        f"ORDER BY {model.alias}id LIMIT $1) x ORDER BY x.id"
    )

    async def fetch(after: str | None, limit: int) -> list[str]:
        if after is None:
            rows = await pool.fetch(first, limit)
        else:
            rows = await pool.fetch(then, limit, after)
        return [r["id"] for r in rows]

    return fetch
