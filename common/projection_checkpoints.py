"""Where every live projection stands: its checkpoint, read the way its readers read it.

PostgreSQL projections keep a row in ``read.projection_checkpoints`` (rebuild copies
have their own rows, named with :data:`SHADOW_SUFFIX`); Redis projections keep the
checkpoint of their active generation (``common/lua/active_checkpoint.lua``, as the
read server and the projector read it). The write server's outbox backlog reads them
all; a projection that was never built has no checkpoint and is left out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from redis.asyncio import Redis

from common import redis_scripts
from common.event_log import Executor
from common.positions import Position
from common.redis_keys import ProjectionKeys, keyspaces
from common.segmenting import redis_shards
from common.settings import Settings

# A rebuild's copy of consumer ``X`` is ``X`` + this (its shadow table and checkpoint row).
SHADOW_SUFFIX = "__rebuild"
# The Redis projections (``redis:<family>``), each under ``P:<family>``.
REDIS_FAMILIES: tuple[str, ...] = ("products", "customers", "orders")

# A split projection's segments have rows of their own (``pg:orders#1/4``); its own row
# is the lowest of theirs, and the one that counts here.
SEGMENT_SEPARATOR = "#"


def spread_of(settings: Settings) -> dict[str, int]:
    """Over how many keyspaces each Redis projection is spread (1: one keyspace;
    :func:`common.segmenting.redis_shards`)."""
    return redis_shards(settings.projector_segments, settings.redis_spread, REDIS_FAMILIES)


def segment_parts(name: str) -> tuple[str, str]:
    """``redis:orders#1/4`` -> ``("redis:orders", "1/4")``; a name that is not a
    segment's -> ``(name, "")``."""
    base, _, segment = name.partition(SEGMENT_SEPARATOR)
    return base, segment


_PG_LIVE = f"""
SELECT projection, xid, seq FROM read.projection_checkpoints
WHERE right(projection, length($1::text)) <> $1::text
  AND strpos(projection, '{SEGMENT_SEPARATOR}') = 0
"""


async def pg_checkpoints(db: Executor) -> dict[str, Position]:
    """The checkpoint of every live PostgreSQL projection (``pg:products`` ...)."""
    rows = await db.fetch(_PG_LIVE, SHADOW_SUFFIX)
    return {r["projection"]: Position(int(r["xid"]), int(r["seq"])) for r in rows}


class RedisCheckpoints:
    """Reads the active generation's checkpoint of Redis projections (of a spread one: the
    lowest of its shards', what a reader of all of it may rely on)."""

    def __init__(
        self,
        client: Redis,
        prefix: str,
        families: Sequence[str] = REDIS_FAMILIES,
        guesses: redis_scripts.GenerationGuesses | None = None,
        shards: Mapping[str, int] | None = None,
    ) -> None:
        """``guesses``: the generations seen active, shared with the caller's own scripts;
        ``shards``: over how many keyspaces each family is spread (default 1: one)."""
        self.prefix = prefix
        shards = shards or {}
        self._keys = {f"redis:{f}": keyspaces(prefix, f, shards.get(f, 1)) for f in families}
        self._script = client.register_script(
            redis_scripts.script(*redis_scripts.ACTIVE_CHECKPOINT)
        )
        self._guesses = guesses or redis_scripts.GenerationGuesses()

    async def active(self, keys: ProjectionKeys) -> tuple[int, Position | None] | None:
        """The active generation of one projection and its checkpoint (``None``: it has
        lost it), or ``None`` when no generation is active."""

        async def attempt(gen: int) -> list[bytes | None] | None:
            return await self._script(  # type: ignore[no-any-return]
                keys=[keys.active, keys.checkpoint(gen)], args=[str(gen)]
            )

        reply = await self._guesses.call(keys, attempt)
        if not reply:
            return None
        return int(reply[0]), Position.from_checkpoint(reply[1]) if reply[1] else None

    async def read(self) -> dict[str, Position]:
        """Every built Redis projection's checkpoint (by consumer name)."""
        found: dict[str, Position] = {}
        for name in self._keys:
            if (position := await self.checkpoint(name)) is not None:
                found[name] = position
        return found

    async def checkpoint(self, name: str) -> Position | None:
        """The checkpoint of ``redis:<family>`` (spread: the lowest of its shards'), or
        ``None`` when it (one of its shards) is not built."""
        positions = []
        for keys in self._keys[name]:
            active = await self.active(keys)
            if active is None or active[1] is None:
                return None  # a shard not built: neither is the projection, for a reader
            positions.append(active[1])
        return min(positions)
