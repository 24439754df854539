"""Rebuilding projections from the event log into a fresh copy, then switching atomically.

The live projector may keep running throughout; readers never see a half-built model.

Redis: a new generation ``G`` (INCR ``P:proj:next_gen``) is filled from the origin,
then one Lua script sets ``active = G`` only if ``G``'s checkpoint is not behind the
active generation's (otherwise catch up more and retry). The live runner's next
compare-and-set fails once and it continues from ``G``'s checkpoint. The old
generation is deleted (SCAN MATCH + UNLINK) after a short grace period.

PostgreSQL: ``read.<table>__rebuild`` (``LIKE ... INCLUDING ALL``) with its own
checkpoint row is filled, then in one transaction: lock the live checkpoint row
``FOR UPDATE`` (the live runner's commits wait), catch the shadow up to the
horizon, swap the tables by renaming (indexes too), and set the live checkpoint
to the shadow's.

A fresh install (nothing built yet) is the same path: there is nothing to be
behind, so the new copy is simply activated. One rebuild per projection kind at a
time (a PostgreSQL advisory lock).
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Sequence
from typing import TextIO

import asyncpg

from common.positions import ORIGIN, Position
from common.progress import Progress
from common.redis_keys import ProjectionKeys
from projector.batch import reduce_batch
from projector.bootstrap import Resources
from projector.errors import ReducerError
from projector.leadership import lock_key
from projector.outbox import Executor, count_after, read_batch
from projector.projections import PG, REDIS, ProjectionKind, projection_name
from projector.stores import pg_shadow
from projector.stores.pg_store import CHECKPOINTS, PgProjectionStore
from projector.stores.port import ProjectionStore
from projector.stores.redis_generations import (
    activate_generation,
    active_generation,
    delete_generation,
    generations,
    new_generation,
)
from projector.stores.redis_store import RedisProjectionStore
from projector.transient import is_transient

log = logging.getLogger(__name__)

_COUNT_CAP = 1_000_000_000
_SWAP_ATTEMPTS = 3


class RebuildFailed(Exception):
    """The rebuild of one projection was abandoned (its copy was removed)."""


async def rebuild(
    resources: Resources,
    kinds: Sequence[ProjectionKind],
    *,
    out: TextIO | None = None,
    grace_s: float = 2.0,
) -> int:
    """Rebuild the Redis and the PostgreSQL projection of each kind; 0 on success."""
    out = out if out is not None else sys.stderr
    failed = 0
    for kind in kinds:
        lock = await _try_rebuild_lock(resources, kind)
        if lock is None:
            print(f"rebuild {kind.name}: another rebuild is running", file=out)
            failed += 1
            continue
        try:
            await rebuild_redis(resources, kind, out=out, grace_s=grace_s)
            await rebuild_pg(resources, kind, out=out)
        except RebuildFailed as exc:
            print(f"rebuild {kind.name}: FAILED: {exc}", file=out)
            failed += 1
        finally:
            await lock.close()
    return 1 if failed else 0


async def rebuild_redis(
    resources: Resources, kind: ProjectionKind, *, out: TextIO, grace_s: float
) -> int:
    """Fill a new generation and activate it; returns its number."""
    client, settings = resources.redis, resources.settings
    keys = ProjectionKeys(settings.redis_prefix, kind.name)
    await _drop_abandoned_generations(resources, keys)
    gen = await new_generation(client, keys)
    store = RedisProjectionStore(client, settings.redis_prefix, kind, generation=gen)
    progress = await _progress(resources, kind, f"rebuild {projection_name(REDIS, kind)}", out)
    try:
        while True:
            await catch_up(kind, store, resources.pool, settings.projector_batch_size, progress)
            result = await activate_generation(client, keys, gen)
            if result.switched:
                break
            log.info("%s: live generation is ahead (%s); catching up", store.name, result)
    except BaseException as exc:
        progress.finish("aborted")
        await delete_generation(client, keys, gen)
        if isinstance(exc, ReducerError):
            raise RebuildFailed(str(exc)) from exc
        raise
    progress.finish(f"-> generation {gen} active")
    if result.previous is not None:
        # The live runner may be mid-batch on the old generation; its commit will fail
        # the generation check and it reloads. Give it a moment before deleting.
        await asyncio.sleep(grace_s)
        await delete_generation(client, keys, result.previous)
    return gen


async def rebuild_pg(resources: Resources, kind: ProjectionKind, *, out: TextIO) -> None:
    """Fill a shadow table and swap it in."""
    pool, settings = resources.pool, resources.settings
    live_name = projection_name(PG, kind)
    shadow_name = live_name + pg_shadow.SHADOW_SUFFIX
    shadow = await pg_shadow.create_shadow(pool, kind.table, shadow_name)
    store = PgProjectionStore(pool, kind, table=shadow, checkpoint_name=shadow_name)
    progress = await _progress(resources, kind, f"rebuild {live_name}", out)
    try:
        await catch_up(kind, store, pool, settings.projector_batch_size, progress)
        # Fresh statistics, so queries plan well on the new table from the first read.
        await pool.execute(f"ANALYZE read.{shadow}")
        for attempt in range(1, _SWAP_ATTEMPTS + 1):
            try:
                position = await _swap(pool, kind, store, live_name, settings.projector_batch_size)
                break
            except Exception as exc:
                if not is_transient(exc) or attempt == _SWAP_ATTEMPTS:
                    raise
                log.warning("%s: swap failed (%s); retrying", live_name, exc)
    except BaseException as exc:
        progress.finish("aborted")
        await pg_shadow.drop_shadow(pool, kind.table, shadow_name)
        if isinstance(exc, ReducerError):
            raise RebuildFailed(str(exc)) from exc
        raise
    progress.finish(f"-> swapped in at {position.to_checkpoint()}")


async def catch_up(
    kind: ProjectionKind,
    store: ProjectionStore,
    db: Executor,
    batch_size: int,
    progress: Progress | None = None,
) -> Position:
    """Apply every event up to the current horizon to ``store``; returns its checkpoint."""
    checkpoint = await store.checkpoint()
    while True:
        batch = await read_batch(db, checkpoint, kind.consumes, batch_size)
        if batch.moved:
            changes = await reduce_batch(kind, store, batch.events)
            await store.commit(checkpoint, batch.next, changes)
            checkpoint = batch.next
            if progress is not None:
                progress.advance(len(batch.events))
        if not batch.full:
            return checkpoint


async def _swap(
    pool: asyncpg.Pool,
    kind: ProjectionKind,
    shadow: PgProjectionStore,
    live_name: str,
    batch_size: int,
) -> Position:
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            f"INSERT INTO {CHECKPOINTS} (projection, xid, seq) VALUES ($1, 0, 0) "
            "ON CONFLICT (projection) DO NOTHING",
            live_name,
        )
        row = await conn.fetchrow(
            f"SELECT xid, seq FROM {CHECKPOINTS} WHERE projection = $1 FOR UPDATE", live_name
        )
        live = Position(row["xid"], row["seq"])
        # The live runner cannot commit now; bring the shadow to the horizon in this transaction.
        position = await catch_up(kind, shadow.bound(conn), conn, batch_size)
        if position < live:
            raise RuntimeError(f"shadow at {position} is behind the live projection at {live}")
        await pg_shadow.swap_in_shadow(conn, kind.table)
        await conn.execute(
            f"UPDATE {CHECKPOINTS} SET xid = $2, seq = $3, updated_at = now() "
            "WHERE projection = $1",
            live_name,
            position.xid,
            position.seq,
        )
        await conn.execute(f"DELETE FROM {CHECKPOINTS} WHERE projection = $1", shadow.name)
        return position


async def _drop_abandoned_generations(resources: Resources, keys: ProjectionKeys) -> None:
    # Scan first, read `active` after: a generation a live runner creates meanwhile is
    # either not seen or seen as active. Other rebuilds are excluded by the rebuild lock.
    found = await generations(resources.redis, keys)
    active = await active_generation(resources.redis, keys)
    for gen in sorted(found - {active} if active is not None else found):
        log.info("deleting abandoned generation %d of %s", gen, keys.base)
        await delete_generation(resources.redis, keys, gen)


async def _progress(
    resources: Resources, kind: ProjectionKind, label: str, out: TextIO
) -> Progress:
    total = await count_after(resources.pool, ORIGIN, kind.consumes, _COUNT_CAP)
    return Progress(label, total, out)


async def _try_rebuild_lock(
    resources: Resources, kind: ProjectionKind
) -> asyncpg.Connection | None:
    """A connection holding the kind's rebuild lock, or None if another rebuild has it."""
    conn = await asyncpg.connect(
        resources.settings.asyncpg_dsn,
        server_settings={"application_name": f"cqrs-rebuild:{kind.name}"},
    )
    if await conn.fetchval("SELECT pg_try_advisory_lock($1)", lock_key(f"rebuild:{kind.name}")):
        return conn
    await conn.close()
    return None
