"""SOURCE_PROJECTION: the Redis projections, one Lua call per get or list.

Documents are stored as ``SerializeToString()`` bytes and returned untouched.
With a near-cache (:mod:`read_server.sources.near_cache`), a read the cache can
answer — fresh enough for its token — never reaches Redis; a miss reads Redis as
below and leaves the answer on the shelf.
Each call resolves the active generation, checks that it is whole (its checkpoint
exists) and fresh enough for the consistency token, and reads, atomically (see
``common/lua``). A projection that is not there (never built, being rebuilt after
Redis lost it, or vanished) is UNAVAILABLE, never an empty answer.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript

from common import redis_scripts
from common.cursors import SortKey
from common.entities import ENTITIES, Entity
from common.errors import Unavailable
from common.positions import Position
from common.redis_keys import ProjectionKeys
from read_server.sources.base import Freshness, Page, PageRequest, Where
from read_server.sources.near_cache import MISS, PageKey, Shelf
from read_server.sources.waiting import BEHIND, CheckpointWatch, HeadCheck, NotReady, Pending

log = logging.getLogger(__name__)

_MISSING, _BEHIND = 0, 1
_NOT_READY = {
    b"building": NotReady(
        "is being rebuilt from the event log; retry shortly (or read SOURCE_READ_MODEL)"
    ),
    b"lost": NotReady("lost its data in Redis; the projector rebuilds it from the event log"),
    # No generation at all: never built, or Redis lost everything (a restart) and the
    # projector has not begun the rebuild yet; a reader cannot tell the two apart.
    b"absent": NotReady(
        "is not built: the projector builds it from the event log (on its first start, or "
        "after Redis lost its data); retry shortly (or read SOURCE_READ_MODEL)"
    ),
}


class ProjectionSource:
    """Reads ``{prefix}:{products|customers|orders}:...`` as laid out in ARCHITECTURE.md.

    Create one per process: it registers the Lua scripts on ``client`` once
    (EVALSHA, reloaded transparently after a Redis restart). ``check_head`` refuses
    tokens from the future (:mod:`read_server.sources.waiting`).
    """

    def __init__(
        self,
        client: aioredis.Redis,
        prefix: str,
        shelves: Mapping[str, Shelf] | None = None,
        check_head: HeadCheck | None = None,
    ) -> None:
        self._keys = {e.name: ProjectionKeys(prefix, e.name) for e in ENTITIES}
        self._get: AsyncScript = client.register_script(redis_scripts.script(*redis_scripts.GET))
        self._list: AsyncScript = client.register_script(redis_scripts.script(*redis_scripts.LIST))
        self._active_checkpoint: AsyncScript = client.register_script(
            redis_scripts.script(*redis_scripts.ACTIVE_CHECKPOINT)
        )
        self._watch = CheckpointWatch(self._checkpoint, check_head)
        self._shelves = dict(shelves or {})

    def heard(self, projection: str, checkpoint: Position) -> None:
        """The change feed saw ``projection`` reach ``checkpoint``: wake token waiters."""
        self._watch.advanced(f"redis:{projection}", checkpoint)

    async def get(self, entity: Entity, ident: str, freshness: Freshness) -> bytes | None:
        return await self._get_doc(entity.name, ident, freshness)

    async def list(
        self, entity: Entity, page: PageRequest, where: Where, freshness: Freshness
    ) -> Page:
        return await self._list_page(entity.name, "idx:" + entity.index_for(where), page, freshness)

    async def _get_doc(self, projection: str, ident: str, freshness: Freshness) -> bytes | None:
        keys = self._keys[projection]
        script_keys = [keys.active, keys.next_gen]
        args = [keys.base, _required(freshness), ident]

        async def attempt() -> bytes | Pending | None:
            shelf = self._shelf(projection, freshness)
            if shelf is not None:
                if (cached := shelf.doc(ident)) is not MISS:
                    return cached
                since = shelf.epoch
            reply = await self._get(keys=script_keys, args=args)
            if (pending := _pending(reply)) is not None:
                return pending
            doc = bytes(reply[1]) if reply[1] is not None else None
            if shelf is not None:
                shelf.keep_doc(since, ident, doc)
            return doc

        return await self._watch.until_fresh(f"redis:{projection}", freshness, attempt)

    async def _list_page(
        self, projection: str, index: str, page: PageRequest, freshness: Freshness
    ) -> Page:
        keys = self._keys[projection]
        script_keys = [keys.active, keys.next_gen]
        start = "+" if page.after is None else "(" + page.after.member()
        args: list[str | int] = [keys.base, _required(freshness), index, start, page.size + 1]
        key: PageKey = (index, start, page.size)

        async def attempt() -> Page | Pending:
            shelf = self._shelf(projection, freshness)
            if shelf is not None:
                if (cached := shelf.page(key)) is not MISS:
                    return cached
                since = shelf.epoch
            reply = await self._list(keys=script_keys, args=args)
            if (pending := _pending(reply)) is not None:
                return pending
            found = _to_page(projection, reply[1], reply[2], page.size)
            if shelf is not None:
                shelf.keep_page(since, key, found, _ids(reply[1], page.size))
            return found

        return await self._watch.until_fresh(f"redis:{projection}", freshness, attempt)

    def _shelf(self, projection: str, freshness: Freshness) -> Shelf | None:
        """The near-cache shelf that may answer this read, if any."""
        shelf = self._shelves.get(projection)
        return shelf if shelf is not None and shelf.serves(freshness) else None

    async def _checkpoint(self, name: str) -> Position | None:
        """The active generation's checkpoint of ``redis:<projection>``, if any."""
        keys = self._keys[name.removeprefix("redis:")]
        found = await self._active_checkpoint(keys=[keys.active], args=[keys.base])
        return Position.from_checkpoint(found[1]) if found and found[1] else None


def _required(freshness: Freshness) -> str:
    return "" if freshness.position is None else freshness.position.to_checkpoint()


def _pending(reply: list[Any]) -> Pending | None:
    if reply[0] == _MISSING:
        return _NOT_READY[bytes(reply[1])]
    return BEHIND if reply[0] == _BEHIND else None


def _to_page(projection: str, members: list[bytes], docs: list[bytes | None], size: int) -> Page:
    more = len(members) > size
    members, docs = members[:size], docs[:size]
    items: list[bytes] = []
    for member, doc in zip(members, docs, strict=True):
        if doc is None:
            # Batches write docs and indexes in one script, so only a projector bug or an
            # evicted key gets here: refuse rather than return a short or wrong page.
            log.error("redis:%s index member %r has no document", projection, member)
            raise Unavailable(
                f"projection redis:{projection} is damaged (an index entry has no document); "
                "rebuild it with `cqrs projector rebuild`"
            )
        items.append(bytes(doc))
    return Page(items, SortKey.from_member(members[-1]) if more else None)


def _ids(members: list[bytes], size: int) -> tuple[str, ...]:
    """The ids of the documents on a page (members are ``{created_us:016x}|{id}``)."""
    return tuple(SortKey.from_member(m).id for m in members[:size])
