"""The continuous audit's round-robin cursor (projector/audit_cursor.py), in memory: every
id once per lap of ``documents / n`` calls, wrapping around, ids added and removed meanwhile."""

from __future__ import annotations

import bisect

from projector.audit_cursor import FetchIds, RoundRobin


def _ids(count: int) -> list[str]:
    return [f"{i:04x}" for i in range(count)]


def _fetch(ids: list[str]) -> FetchIds:
    """The write table's keyset query over ``ids`` (kept sorted; may change between calls)."""

    async def fetch(after: str | None, limit: int) -> list[str]:
        ordered = sorted(ids)
        start = 0 if after is None else bisect.bisect_right(ordered, after)
        return ordered[start : start + limit]

    return fetch


async def test_every_id_within_one_period_then_again() -> None:
    ids = _ids(103)
    cursor, fetch = RoundRobin(), _fetch(ids)
    per_call = 10
    period = -(-len(ids) // per_call)  # calls: documents / rate, rounded up
    first_lap = [i for _ in range(period) for i in await cursor.take(per_call, fetch)]
    assert set(first_lap) == set(ids)
    # The lap's last call finished it and started the next one with the first ids.
    assert first_lap[: len(ids)] == ids
    assert first_lap[len(ids) :] == ids[: period * per_call - len(ids)]
    assert cursor.laps == 1
    second_lap = [i for _ in range(period) for i in await cursor.take(per_call, fetch)]
    assert set(ids) <= set(first_lap[len(ids) :] + second_lap)
    assert cursor.laps == 2


async def test_fewer_ids_than_a_call_takes_each_once() -> None:
    ids = _ids(3)
    cursor, fetch = RoundRobin(), _fetch(ids)
    assert await cursor.take(5, fetch) == ids
    for _ in range(3):
        taken = await cursor.take(5, fetch)
        assert sorted(taken) == ids and len(taken) == 3


async def test_ids_added_and_removed_meanwhile() -> None:
    ids = _ids(20)
    cursor, fetch = RoundRobin(), _fetch(ids)
    assert await cursor.take(8, fetch) == ids[:8]
    ids.remove(ids[3])  # already taken
    ids.remove(ids[10])  # not yet: no longer comes
    ids.append("zzzz")  # past the cursor: taken this lap
    rest = await cursor.take(8, fetch) + await cursor.take(8, fetch)
    assert "zzzz" in rest and "000b" not in rest


async def test_empty_and_nothing_asked() -> None:
    cursor, fetch = RoundRobin(), _fetch([])
    assert await cursor.take(5, fetch) == []
    assert await cursor.take(0, _fetch(_ids(3))) == []
    assert cursor.after is None and cursor.laps == 0
