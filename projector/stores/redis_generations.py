"""Generations of a Redis projection: allocate, activate, list and delete them."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from redis.asyncio import Redis

from common import redis_scripts
from common.positions import ORIGIN, Position
from common.redis_keys import ProjectionKeys

_SCAN_COUNT = 1000
_UNLINK_CHUNK = 500


@dataclass(frozen=True, slots=True)
class SwitchResult:
    """Outcome of :func:`activate_generation`."""

    switched: bool
    previous: int | None  # the generation that was active before (switched)
    active_checkpoint: Position | None  # the active generation's checkpoint (not switched)
    lost: bool = False  # the new generation vanished (Redis was emptied meanwhile)


async def active_generation(client: Redis, keys: ProjectionKeys) -> int | None:
    """The active generation, or ``None`` if the projection was never built."""
    raw = await client.get(keys.active)
    return int(raw) if raw is not None else None


async def new_generation(client: Redis, keys: ProjectionKeys) -> int:
    """Allocate an empty, inactive generation at the origin and return its number."""
    gen = int(await client.incr(keys.next_gen))
    # Numbers restart at 1 after Redis lost everything, so stale keys may exist.
    await delete_generation(client, keys, gen)
    await client.set(keys.checkpoint(gen), ORIGIN.to_checkpoint())
    return gen


async def activate_generation(
    client: Redis,
    keys: ProjectionKeys,
    gen: int,
    segments: Sequence[str] = (),
    guesses: redis_scripts.GenerationGuesses | None = None,
) -> SwitchResult:
    """Make ``gen`` active unless it is behind the active generation (one atomic script),
    split into ``segments`` (their checkpoint keys, each set to the copy's checkpoint;
    none: not split). ``guesses``: the caller's, naming the generation it saw active."""
    script = client.register_script(redis_scripts.script(*redis_scripts.SWITCH_GENERATION))

    async def attempt(active: int) -> list[bytes]:
        return await script(  # type: ignore[no-any-return]
            keys=[
                keys.active,
                keys.checkpoint(gen),
                keys.checkpoint(active),
                keys.segments(gen),
                *segments,
            ],
            args=[str(gen), str(active), keys.changes],
        )

    outcome, detail = await (guesses or redis_scripts.GenerationGuesses()).call(keys, attempt)
    if outcome == b"ok":
        return SwitchResult(True, int(detail) if detail else None, None)
    if outcome == b"lost":
        return SwitchResult(False, None, None, lost=True)
    return SwitchResult(False, None, Position.from_checkpoint(detail))


async def generations(client: Redis, keys: ProjectionKeys) -> set[int]:
    """Every generation that has keys (SCAN; no KEYS)."""
    found: set[int] = set()
    pattern = re.compile(re.escape(keys.base) + r":g(\d+):")
    async for key in client.scan_iter(match=keys.generation_pattern(), count=_SCAN_COUNT):
        text = key.decode() if isinstance(key, bytes) else str(key)
        if m := pattern.match(text):
            found.add(int(m.group(1)))
    return found


async def delete_generation(client: Redis, keys: ProjectionKeys, gen: int) -> int:
    """UNLINK every key of generation ``gen`` (SCAN MATCH); returns how many."""
    deleted = 0
    batch: list[bytes | str] = []
    async for key in client.scan_iter(match=keys.generation_pattern(gen), count=_SCAN_COUNT):
        batch.append(key)
        if len(batch) >= _UNLINK_CHUNK:
            deleted += int(await client.unlink(*batch))
            batch.clear()
    if batch:
        deleted += int(await client.unlink(*batch))
    return deleted


async def delete_abandoned(client: Redis, keys: ProjectionKeys) -> list[int]:
    """Delete every generation but the active one (left behind by crashed rebuilds).

    Callers exclude concurrent rebuilds (the rebuild lock). Scan first, read
    ``active`` after: a generation activated meanwhile is either not seen or seen
    as active."""
    found = await generations(client, keys)
    active = await active_generation(client, keys)
    abandoned = sorted(found - {active} if active is not None else found)
    for gen in abandoned:
        await delete_generation(client, keys, gen)
    return abandoned
