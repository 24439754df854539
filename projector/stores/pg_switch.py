"""Switching a PostgreSQL copy in: the transaction that ends every PostgreSQL rebuild (a
shadow table of a projection, the copy schema of the analytics)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence

import asyncpg

from common.outages import is_transient
from common.positions import Position
from projector.stores import pg_checkpoints

log = logging.getLogger(__name__)

ATTEMPTS = 3
# Catches the copy up to the horizon through the connection given (inside the switch).
Fill = Callable[[asyncpg.Connection], Awaitable[Position]]
# Puts the copy's objects in place of the live ones (inside the switch).
SwapIn = Callable[[asyncpg.Connection], Awaitable[None]]


async def switch_in(
    pool: asyncpg.Pool,
    live: str,
    copy: str,
    fill: Fill,
    swap_in: SwapIn,
    segments: Sequence[str] = (),
) -> Position:
    """In one transaction holding ``live``'s checkpoint row, so its runner cannot commit:
    ``fill`` the copy up to the horizon, check it is not behind, ``swap_in``, move the live
    checkpoint there, split it into ``segments`` (their rows, each there too; none: not
    split) and drop the copy's row; the new checkpoint. Transient failures (a deadlock with
    a reader, a dropped connection) are retried."""
    for attempt in range(1, ATTEMPTS + 1):
        try:
            return await _switch(pool, live, copy, fill, swap_in, segments)
        except Exception as exc:
            if not is_transient(exc) or attempt == ATTEMPTS:
                raise
            log.warning("%s: swap failed (%s); retrying", live, exc)
    raise AssertionError("unreachable")


async def _switch(
    pool: asyncpg.Pool, live: str, copy: str, fill: Fill, swap_in: SwapIn, segments: Sequence[str]
) -> Position:
    async with pool.acquire() as conn, conn.transaction():
        await pg_checkpoints.ensure(conn, live)
        current = await pg_checkpoints.lock(conn, live)
        assert current is not None
        position = await fill(conn)
        if position < current:
            raise RuntimeError(f"{copy} at {position} is behind {live} at {current}")
        await swap_in(conn)
        await pg_checkpoints.write(conn, live, position)
        await pg_checkpoints.split(conn, live, segments, position)
        await pg_checkpoints.delete(conn, copy)
        return position
