"""``cqrs projector prune-redis``: find, and with ``--delete`` remove, the Redis keyspaces of
projections this configuration no longer uses.

A keyspace is every key under one hash tag, ``P:L2:{orders}:…`` (:mod:`common.redis_keys`).
Left behind are those of an older layout (``P:{orders}:…``, layout 1: a key per document)
and those of a spread no longer configured (``P:L2:{orders#1/3.2}:…`` after the spread was
turned off or S changed): nothing reads or writes them, and they hold memory. The ones in
use are computed from the settings (``CQRS_REDIS_SPREAD``, ``CQRS_PROJECTOR_SEGMENTS``), as
every process computes them. A keyspace whose change channel still has a subscriber (a
read server of the old configuration) is kept, whatever the settings say.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TextIO

from redis.asyncio import Redis, RedisCluster

from common.entities import ENTITIES
from common.projection_checkpoints import spread_of
from common.redis_keys import glob_escape, keyspaces
from common.settings import Settings

_SCAN_COUNT = 1000
_UNLINK_CHUNK = 500


@dataclass(frozen=True, slots=True)
class Keyspace:
    """The keys under one hash tag that no configured projection uses."""

    base: str  # 'cqrs:{orders}', 'cqrs:L2:{orders#1/3.2}'
    keys: tuple[bytes, ...]
    subscribers: int  # read servers still following its change channel


def in_use(settings: Settings) -> set[str]:
    """The keyspace bases of the configured Redis projections."""
    spread = spread_of(settings)
    return {
        keys.base
        for e in ENTITIES
        for keys in keyspaces(settings.redis_prefix, e.name, spread.get(e.name, 1))
    }


async def unused(client: Redis, settings: Settings) -> list[Keyspace]:
    """Every keyspace under ``CQRS_REDIS_PREFIX`` that is not in use, by base."""
    prefix = settings.redis_prefix
    # A projection's keys: the prefix, an optional layout, then a hash tag. Other keys under
    # the prefix (the audit's ``P:audit:…``) have no tag there and are never matched.
    pattern = re.compile(rb"^(" + re.escape(prefix.encode()) + rb":(?:L\d+:)?\{[^}]*\})")
    used = {base.encode() for base in in_use(settings)}
    found: dict[bytes, list[bytes]] = {}
    async for key in client.scan_iter(match=glob_escape(prefix) + ":*", count=_SCAN_COUNT):
        raw = key if isinstance(key, bytes) else str(key).encode()
        if (m := pattern.match(raw)) and m.group(1) not in used:
            found.setdefault(m.group(1), []).append(raw)
    return [
        Keyspace(base.decode(), tuple(keys), await _subscribers(client, f"{base.decode()}:changes"))
        for base, keys in sorted(found.items())
    ]


async def prune(client: Redis, settings: Settings, delete: bool, out: TextIO) -> int:
    """Print the unused keyspaces; with ``delete``, UNLINK those nobody follows. 0, or 1
    when a keyspace was kept because a reader still follows it."""
    spaces = await unused(client, settings)
    if not spaces:
        print("no unused Redis keyspaces", file=out)
        return 0
    kept = 0
    for space in spaces:
        if space.subscribers:
            kept += 1
            print(
                f"{space.base}: {len(space.keys)} keys, kept: {space.subscribers} reader(s) "
                "still follow it (a process of the old configuration)",
                file=out,
            )
        elif delete:
            deleted = await _unlink(client, space.keys)
            print(f"{space.base}: {deleted} keys deleted", file=out)
        else:
            print(f"{space.base}: {len(space.keys)} keys, unused", file=out)
    if not delete:
        print("nothing deleted; run again with --delete to delete the unused ones", file=out)
    return 1 if kept else 0


async def _unlink(client: Redis, keys: Iterable[bytes]) -> int:
    """UNLINK ``keys`` (one keyspace: one slot, so one command per chunk on a cluster too)."""
    ordered = list(keys)
    deleted = 0
    for start in range(0, len(ordered), _UNLINK_CHUNK):
        deleted += int(await client.unlink(*ordered[start : start + _UNLINK_CHUNK]))
    return deleted


async def _subscribers(client: Redis, channel: str) -> int:
    """Subscribers of ``channel``. On a cluster a subscriber is on one node (the one its
    client picked), so every node is asked."""
    if not isinstance(client, RedisCluster):
        return sum(int(n) for _, n in await client.pubsub_numsub(channel))
    total = 0
    for node in client.get_nodes():
        reply = await client.pubsub_numsub(channel, target_nodes=node)
        total += sum(int(n) for _, n in reply)
    return total
