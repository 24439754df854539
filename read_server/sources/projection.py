"""SOURCE_PROJECTION: the Redis projections, one Lua call per get and per list (per shard).

Documents are stored as ``SerializeToString()`` bytes and returned untouched.
With a near-cache (:mod:`read_server.sources.near_cache`), a read the cache can
answer — fresh enough for its token — never reaches Redis; a miss reads Redis as
below and leaves the answer on the shelf.
Each call checks the active generation is the one its keys name (every key is declared,
:mod:`common.redis_scripts`), that it is whole (its checkpoint exists) and fresh enough
for the consistency token, and reads, atomically (see ``common/lua``). A list reads the
page's members and their documents in the same call, so a page is one snapshot. A
projection that is not there (never built, being rebuilt after Redis lost it, or vanished)
is UNAVAILABLE, never an empty answer. The calls go over pipelined connections
(:mod:`read_server.sources.pipelined`).

A projection spread over shards (``CQRS_REDIS_SPREAD``, :mod:`common.redis_keys`): a get
reads the one shard that owns the id, at that shard's checkpoint (which covers every event
of the document); a list reads the same page of every shard and merges them (index members
order the same in every shard, so the page token is one key for all; each shard is asked
for a shorter page, its likely share, :mod:`read_server.sources.merging`); a token is reached
by a list when every shard has passed it. Each shard's page is one snapshot; the merged
page is of several, each at least as fresh as the token.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript

from common import redis_scripts
from common.cursors import SortKey, member_id
from common.entities import ENTITIES, Entity
from common.errors import Unavailable
from common.positions import Position
from common.projection_checkpoints import RedisCheckpoints
from common.redis_keys import ProjectionKeys, keyspaces
from common.segmenting import segment_of
from read_server.sources.base import Freshness, Page, PageRequest, Where
from read_server.sources.merging import merged_page
from read_server.sources.near_cache import MISS, PageKey, Shelf
from read_server.sources.pipelined import PipelinedScripts
from read_server.sources.waiting import BEHIND, CheckpointWatch, HeadCheck, NotReady, Pending

log = logging.getLogger(__name__)

_MISSING, _BEHIND, _PAGE = 0, 1, 2
_Reply = list[Any]  # a script's reply
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


@dataclass(frozen=True, slots=True)
class Part:
    """A keyspace of a projection: the projection's own (``name`` = ``orders``), or one of
    its shards (``orders#1/3``, the name of the projector's segment that writes it)."""

    name: str
    keys: ProjectionKeys


def parts_of(prefix: str, projection: str, shards: int) -> list[Part]:
    """The keyspaces of ``projection`` spread over ``shards`` (1: not spread)."""
    spaces = keyspaces(prefix, projection, shards)
    if shards == 1:
        return [Part(projection, spaces[0])]
    return [Part(f"{projection}#{i}/{shards}", keys) for i, keys in enumerate(spaces)]


class ProjectionSource:
    """Reads ``{prefix}:{products|customers|orders}:...`` as laid out in ARCHITECTURE.md.

    Create one per process: it registers the Lua scripts on ``client`` once
    (EVALSHA, reloaded transparently after a Redis restart). ``check_head`` refuses
    tokens from the future (:mod:`read_server.sources.waiting`). ``shards``: over how many
    keyspaces each projection is spread (default 1); ``shelves`` are by part name.
    """

    def __init__(
        self,
        client: aioredis.Redis,
        prefix: str,
        shelves: Mapping[str, Shelf] | None = None,
        check_head: HeadCheck | None = None,
        shards: Mapping[str, int] | None = None,
    ) -> None:
        shards = shards or {}
        self.parts = {e.name: parts_of(prefix, e.name, shards.get(e.name, 1)) for e in ENTITIES}
        self._keys = {p.name: p.keys for parts in self.parts.values() for p in parts}
        self._get: AsyncScript = client.register_script(redis_scripts.script(*redis_scripts.GET))
        self._list: AsyncScript = client.register_script(redis_scripts.script(*redis_scripts.LIST))
        self._calls = PipelinedScripts(client)
        self._guesses = redis_scripts.GenerationGuesses()
        self._checkpoints = RedisCheckpoints(client, prefix, (), self._guesses)
        self._watch = CheckpointWatch(self._checkpoint, check_head)
        self._shelves = dict(shelves or {})

    async def aclose(self) -> None:
        """Close the pipelined connections (the client is its owner's to close)."""
        await self._calls.aclose()

    def heard(self, part: str, checkpoint: Position) -> None:
        """The change feed saw ``part`` (a projection, or a shard of one) reach
        ``checkpoint``: wake token waiters."""
        self._watch.advanced(f"redis:{part}", checkpoint)

    async def get(self, entity: Entity, ident: str, freshness: Freshness) -> bytes | None:
        return await self._get_doc(self._part(entity, ident).name, ident, freshness)

    async def list(
        self, entity: Entity, page: PageRequest, where: Where, freshness: Freshness
    ) -> Page:
        index = "idx:" + entity.index_for(where)
        parts = self.parts[entity.name]
        if len(parts) == 1:
            return await self._list_page(parts[0].name, index, page, freshness)

        def read(shard: int, size: int) -> Awaitable[Page]:
            shard_page = PageRequest(size, page.after)
            return self._shard_page(parts[shard].name, index, shard_page, freshness)

        return await merged_page(read, len(parts), page.size)

    async def current(
        self, entity: Entity, ident: str, freshness: Freshness
    ) -> tuple[bytes | None, Position]:
        """The document (``None``: none) and the checkpoint it is current at, always read
        from Redis (a Watch stream's position); waits for ``freshness`` as :meth:`get`."""
        projection = self._part(entity, ident).name
        keys = self._keys[projection]
        read = self._doc_reader(keys, ident, _required(freshness))

        async def attempt() -> tuple[bytes | None, Position] | Pending:
            reply = await self._call(keys, read)
            if (pending := _pending(reply)) is not None:
                return pending
            doc = bytes(reply[1]) if reply[1] is not None else None
            return doc, Position.from_checkpoint(reply[2])

        return await self._watch.until_fresh(f"redis:{projection}", freshness, attempt)

    async def checkpoint_at_least(self, entity: Entity, freshness: Freshness) -> Position:
        """The projection's checkpoint, once it has reached ``freshness`` (spread: the
        lowest of its shards', once each has)."""
        found = [
            await self._part_checkpoint(part.name, freshness) for part in self.parts[entity.name]
        ]
        return min(found)

    async def _part_checkpoint(self, projection: str, freshness: Freshness) -> Position:
        required = freshness.position

        async def attempt() -> Position | Pending:
            found = await self._checkpoint(projection)
            if found is None:
                return _NOT_READY[b"absent"]
            return BEHIND if required is not None and found < required else found

        return await self._watch.until_fresh(f"redis:{projection}", freshness, attempt)

    def _doc_reader(
        self, keys: ProjectionKeys, ident: str, required: str
    ) -> Callable[[int], Awaitable[_Reply]]:
        async def read(gen: int) -> _Reply:
            return await self._calls.call(  # type: ignore[no-any-return]
                self._get, [*_prelude_keys(keys, gen), keys.docs(gen)], [gen, required, ident]
            )

        return read

    async def _get_doc(self, projection: str, ident: str, freshness: Freshness) -> bytes | None:
        keys = self._keys[projection]
        read = self._doc_reader(keys, ident, _required(freshness))

        async def attempt() -> bytes | Pending | None:
            shelf = self._shelf(projection, freshness)
            if shelf is not None:
                if (cached := shelf.doc(ident)) is not MISS:
                    return cached
                since = shelf.epoch
            reply = await self._call(keys, read)
            if (pending := _pending(reply)) is not None:
                return pending
            doc = bytes(reply[1]) if reply[1] is not None else None
            if shelf is not None:
                shelf.keep_doc(since, ident, doc)
            return doc

        return await self._watch.until_fresh(f"redis:{projection}", freshness, attempt)

    async def _list_page(
        self,
        projection: str,
        index: str,
        page: PageRequest,
        freshness: Freshness,
        keyed: bool = False,
    ) -> Page:
        """One page of ``projection``'s (a part's) ``index``; ``keyed``: with each document's
        key (to merge shards' pages; parsing them costs a list that is not merged)."""
        start = _start(page)
        key: PageKey = (index, start, page.size)

        async def read(gen: int) -> list[Any]:
            keys = _list_keys(self._keys[projection], gen, index)
            args = _list_args(gen, freshness, start, page.size)
            return await self._calls.call(self._list, keys, args)  # type: ignore[no-any-return]

        async def attempt() -> Page | Pending:
            shelf = self._shelf(projection, freshness)
            since = 0
            if shelf is not None:
                if (cached := shelf.page(key)) is not MISS:
                    return cached
                since = shelf.epoch
            reply = await self._call(self._keys[projection], read)
            if (pending := _pending(reply)) is not None:
                return pending
            return _kept_page(projection, reply, page.size, keyed, shelf, since, key)

        return await self._watch.until_fresh(f"redis:{projection}", freshness, attempt)

    def _shard_page(
        self, projection: str, index: str, page: PageRequest, freshness: Freshness
    ) -> Awaitable[Page]:
        """A shard's page for a merge (as :meth:`_list_page` with ``keyed``). The plain case
        (the near-cache's page, or the active generation known and a pipelined connection
        open) is answered now or in the reply's callback: a spread list's shards cost no
        task each. Any other reply (the generation moved, behind the token, an error, a
        lost connection) is read again the general way."""
        start = _start(page)
        key: PageKey = (index, start, page.size)
        shelf = self._shelf(projection, freshness)
        since = 0
        if shelf is not None:
            if (cached := shelf.page(key)) is not MISS:
                done: asyncio.Future[Page] = asyncio.get_running_loop().create_future()
                done.set_result(cached)
                return done
            since = shelf.epoch
        keys = self._keys[projection]
        gen = self._guesses.last(keys)
        sent = None
        if gen:  # else the first call only learns the generation: the general way
            args = _list_args(gen, freshness, start, page.size)
            sent = self._calls.send(self._list, _list_keys(keys, gen, index), args)
        if sent is None:
            return self._list_page(projection, index, page, freshness, keyed=True)
        loop = sent.get_loop()
        done = loop.create_future()

        def finish(sent: asyncio.Future[Any]) -> None:
            if done.done():
                return  # the caller gave up
            failed = sent.cancelled() or sent.exception() is not None
            reply = None if failed else sent.result()
            if isinstance(reply, list) and reply[0] == _PAGE:
                self._calls.answered()
                try:
                    found = _kept_page(projection, reply, page.size, True, shelf, since, key)
                except Exception as exc:  # a damaged projection (or a bug): raised, not a hang
                    done.set_exception(exc)
                    return
                done.set_result(found)
                return
            general = self._list_page(projection, index, page, freshness, keyed=True)
            _settle(done, loop.create_task(general))

        sent.add_done_callback(finish)
        return done

    def _part(self, entity: Entity, ident: str) -> Part:
        """The keyspace that holds ``ident``'s document."""
        parts = self.parts[entity.name]
        return parts[0] if len(parts) == 1 else parts[segment_of(ident, len(parts))]

    async def _call(self, keys: ProjectionKeys, read: Callable[[int], Awaitable[Any]]) -> Any:
        try:
            return await self._guesses.call(keys, read)
        except redis_scripts.GenerationMoving as exc:
            raise Unavailable(f"{exc}; retry") from exc

    def _shelf(self, projection: str, freshness: Freshness) -> Shelf | None:
        """The near-cache shelf that may answer this read, if any."""
        shelf = self._shelves.get(projection)
        return shelf if shelf is not None and shelf.serves(freshness) else None

    async def _checkpoint(self, name: str) -> Position | None:
        """The active generation's checkpoint of ``redis:<projection>``, if any."""
        found = await self._checkpoints.active(self._keys[name.removeprefix("redis:")])
        return found[1] if found is not None else None


def _settle(done: asyncio.Future[Page], task: asyncio.Future[Page]) -> None:
    """``done`` gets ``task``'s outcome; ``task`` is cancelled if ``done`` is."""

    def copy(task: asyncio.Future[Page]) -> None:
        if done.done():
            return
        if task.cancelled():
            done.cancel()
        elif (exc := task.exception()) is not None:
            done.set_exception(exc)
        else:
            done.set_result(task.result())

    task.add_done_callback(copy)
    done.add_done_callback(lambda _: task.cancel() if done.cancelled() else None)


def _start(page: PageRequest) -> str:
    """ZRANGE BYLEX REV's start for ``page``."""
    return "+" if page.after is None else "(" + page.after.member()


def _list_keys(keys: ProjectionKeys, gen: int, index: str) -> list[str]:
    """list.lua's keys for ``index`` of generation ``gen``."""
    return [*_prelude_keys(keys, gen), keys.generation(gen) + index, keys.docs(gen)]


def _list_args(gen: int, freshness: Freshness, start: str, size: int) -> list[Any]:
    """list.lua's arguments for a page of ``size`` from ``start`` in generation ``gen`` (one
    member more than the page: does more follow?)."""
    return [gen, _required(freshness), start, size + 1]


def _prelude_keys(keys: ProjectionKeys, gen: int) -> list[str]:
    """The keys ``read_prelude.lua`` checks, for generation ``gen``."""
    return [keys.active, keys.next_gen, keys.checkpoint(gen)]


def _required(freshness: Freshness) -> str:
    return "" if freshness.position is None else freshness.position.to_checkpoint()


def _pending(reply: list[Any]) -> Pending | None:
    if reply[0] == _MISSING:
        return _NOT_READY[bytes(reply[1])]
    return BEHIND if reply[0] == _BEHIND else None


def _to_page(
    projection: str, members: list[bytes], docs: list[bytes | None], size: int, keyed: bool
) -> Page:
    more = len(members) > size
    if more:
        members, docs = members[:size], docs[:size]
    if None in docs:
        # Batches write docs and indexes in one script, so only a projector bug or an
        # evicted key gets here: refuse rather than return a short or wrong page.
        member = members[docs.index(None)]
        log.error("redis:%s index member %r has no document", projection, member)
        raise Unavailable(
            f"projection redis:{projection} is damaged (an index entry has no document); "
            "rebuild it with `cqrs projector rebuild`"
        )
    next_key = SortKey.from_member(members[-1]) if more else None
    # The documents are the bytes the reply holds: returned as they are.
    return Page(cast(list[bytes], docs), next_key, tuple(members) if keyed else ())


def _kept_page(
    projection: str,
    reply: _Reply,
    size: int,
    keyed: bool,
    shelf: Shelf | None,
    since: int,
    key: PageKey,
) -> Page:
    """The page of list.lua's ``reply``, left on ``shelf`` (if any) as of ``since``."""
    _, members, docs, _ = reply
    found = _to_page(projection, members, docs, size, keyed)
    if shelf is not None:
        shelf.keep_page(since, key, found, _ids(members, size))
    return found


def _ids(members: list[bytes], size: int) -> tuple[str, ...]:
    """The ids of the documents on a page (members are ``{created_us:016x}|{id}``)."""
    return tuple(member_id(m) for m in members[:size])
