"""Redis projection store (layout in docs/ARCHITECTURE.md and :mod:`common.redis_keys`).

Documents are pre-serialized protobuf bytes; list indexes are lexicographic
zsets (all scores 0) of ``SortKey.member()``. A batch is one Lua script call
that checks the active generation and the checkpoint, then applies every
document and index change and the new checkpoint.

A *live* store follows ``P:proj:active``; a *copy* is bound to a fixed, inactive
generation that a rebuild fills and then activates (:meth:`switch_to`). Redis may
lose everything (a restart without persistence, FLUSHDB): a missing ``active``, or
an active generation without its checkpoint, is :class:`StoreLost`, on every path.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Collection, Iterable, Mapping, Sequence

from google.protobuf.message import Message
from redis.asyncio import Redis

from common import redis_scripts
from common.changes import ChangeMessage
from common.cursors import SortKey
from common.entities import Entity
from common.positions import Position
from common.redis_keys import ProjectionKeys, glob_escape
from projector.errors import CheckpointMoved, StoreLost
from projector.projections import REDIS, member, projection_name
from projector.segments import Segment, all_segments
from projector.stores.port import Change, ProjectionStore, StoreCatchUp
from projector.stores.redis_generations import (
    activate_generation,
    delete_abandoned,
    delete_generation,
    new_generation,
)

log = logging.getLogger(__name__)

_SCAN_COUNT = 1000


def change_message(
    gen: int,
    new: Position,
    changes: Sequence[Change],
    index_changes: Iterable[tuple[str, str]],
    keys: ProjectionKeys,
) -> bytes:
    """What a committed batch publishes on ``keys.changes`` (see :mod:`common.changes`)."""
    prefix = keys.generation(gen)
    return ChangeMessage(
        generation=gen,
        checkpoint=new,
        ids=frozenset(change.id for change in changes),
        indexes=frozenset(key[len(prefix) :] for key, _ in index_changes),
    ).encode()


class RedisProjectionStore:
    """One Redis projection; ``client`` is the process's shared connection pool.

    ``grace_s``: how long a replaced generation is kept after a switch, so a runner
    mid-batch on it fails its compare-and-set instead of finding keys gone.
    ``segments``: how many segments the live projection is split into
    (:mod:`projector.segments`); ``segment``: the one this store commits as (``None``: the
    projection as a whole, which a split live projection only reads and switches).
    ``spread``: each segment is a keyspace of its own (:mod:`common.redis_keys`), with its
    own generations, built and switched alone; the whole only reads them all.
    """

    def __init__(
        self,
        client: Redis,
        prefix: str,
        kind: Entity,
        *,
        generation: int | None = None,
        grace_s: float = 2.0,
        segments: int = 1,
        segment: Segment | None = None,
        spread: bool = False,
    ) -> None:
        if segment is not None and segment.count != segments:
            raise ValueError(f"segment {segment.label} of a projection split {segments} ways")
        self.kind = kind
        self.segments = segments
        self.segment = segment
        self.spread = spread and segments > 1
        # A shard of a spread projection commits as a projection of its own (its keyspace's
        # checkpoint); a segment of one keyspace also moves the projection's.
        self._commits_as = None if self.spread else segment
        shard = (segment.index, segment.count) if self.spread and segment is not None else None
        self.keys = ProjectionKeys(prefix, kind.name, shard)
        self._client = client
        self._prefix = prefix
        self._fixed = generation is not None
        self._gen = generation
        self._grace_s = grace_s
        self._active_checkpoint = client.register_script(
            redis_scripts.script(*redis_scripts.ACTIVE_CHECKPOINT)
        )
        self._guesses = redis_scripts.GenerationGuesses()
        self._apply = client.register_script(redis_scripts.script(*redis_scripts.APPLY_BATCH))
        # The whole of a spread projection: its shards, which it reads.
        self._shards = (
            [self.split(s) for s in all_segments(segments)]
            if self.spread and segment is None
            else []
        )

    @property
    def name(self) -> str:
        name = projection_name(REDIS, self.kind)
        if self.segment is not None:
            name = self.segment.name(name)
        return f"{name}@g{self._gen}" if self._fixed else name

    @property
    def builds_alone(self) -> bool:
        """A shard of a spread projection is rebuilt alone, into its own keyspace; a segment
        of one keyspace is rebuilt with the whole (:mod:`projector.segments`)."""
        return bool(self.spread and self.segment is not None)

    def split(self, segment: Segment) -> RedisProjectionStore:
        """The live projection as ``segment`` commits it."""
        return RedisProjectionStore(
            self._client,
            self._prefix,
            self.kind,
            grace_s=self._grace_s,
            segments=self.segments,
            segment=segment,
            spread=self.spread,
        )

    @property
    def generation(self) -> int | None:
        """The generation read and written (as last resolved, for a live store)."""
        return self._gen

    async def checkpoint(self) -> Position:
        if self._fixed:
            assert self._gen is not None
            raw = await self._client.get(self.keys.checkpoint(self._gen))
            if raw is None:
                raise StoreLost(self.name, "the generation being built has vanished")
            return Position.from_checkpoint(raw)
        if self._shards:
            # What a reader of all of it may rely on: the lowest of the shards'.
            return min([await shard.checkpoint() for shard in self._shards])
        seg = self._commits_as

        async def attempt(gen: int) -> list[bytes | None] | None:
            keys = [self.keys.active, self.keys.checkpoint(gen), self.keys.segments(gen)]
            if seg is not None:
                keys.append(self._segment_key(gen, seg))
            return await self._active_checkpoint(keys=keys, args=[str(gen)])  # type: ignore[no-any-return]

        found = await self._guesses.call(self.keys, attempt)
        if not found:
            self._gen = None
            raise StoreLost(self.name, "has no active generation (never built, or Redis lost it)")
        self._gen = int(found[0])
        # How many segments the generation was split into, and the checkpoint this store
        # commits from (a segment's own).
        split, checkpoint = found[2], found[1] if seg is None else found[3]
        split_into = int(split) if split else 1
        if split_into != (1 if self.spread else self.segments):
            raise StoreLost(
                self.name,
                f"active generation {self._gen} is split into {split_into} segment(s), this "
                f"process runs {self.segments}",
            )
        if checkpoint is None:
            raise StoreLost(self.name, f"active generation {self._gen} has lost its checkpoint")
        return Position.from_checkpoint(checkpoint)

    async def load(self, ids: Collection[str]) -> dict[str, Message]:
        if self._shards:
            found: dict[str, Message] = {}
            for shard in self._shards:
                assert shard.segment is not None
                await shard._readable_generation()  # the shard's active one, as it is now
                found |= await shard.load([i for i in ids if shard.segment.owns(i)])
            return found
        if self._gen is None or not ids:
            return {}
        ordered = list(ids)
        raw = await self._client.hmget(self.keys.docs(self._gen), ordered)
        return {i: self._parse(r) for i, r in zip(ordered, raw, strict=True) if r is not None}

    async def ids_by(self, field: str, values: Collection[str]) -> dict[str, list[str]]:
        if self._shards:
            merged: dict[str, list[str]] = {v: [] for v in values}
            for shard in self._shards:
                await shard._readable_generation()
                for value, ids in (await shard.ids_by(field, values)).items():
                    merged[value] += ids
            return merged
        if self._gen is None or not values:
            return {v: [] for v in values}
        ordered = list(values)
        pipe = self._client.pipeline(transaction=False)
        for value in ordered:
            pipe.zrange(self.keys.index(self._gen, self.kind.index_for({field: value})), 0, -1)
        results = await pipe.execute()
        return {
            value: [SortKey.from_member(m).id for m in members]
            for value, members in zip(ordered, results, strict=True)
        }

    async def commit(self, expected: Position, new: Position, changes: Sequence[Change]) -> None:
        gen = self._gen
        if gen is None:
            raise StoreLost(self.name, "has no active generation", expected)
        sets: list[str | bytes] = []  # id, document, id, document...
        dels: list[str] = []
        for change in changes:
            if change.after is None:
                dels.append(change.id)
            else:
                sets += (change.id, change.after.SerializeToString())
        rems, adds = self._index_changes(gen, changes)
        seg = self._commits_as
        if self.segment is None and self.segments > 1 and not self._fixed:
            raise TypeError(f"{self.name} is split into segments: they commit, not the whole")
        own = self.keys.checkpoint(gen) if seg is None else self._segment_key(gen, seg)
        keys = [self.keys.active, own, self.keys.docs(gen)]
        keys += [k for k, _ in rems] + [k for k, _ in adds]
        args: list[str | bytes] = [
            "" if self._fixed else str(gen),
            expected.to_checkpoint(),
            new.to_checkpoint(),
            str(len(sets) // 2),
            str(len(dels)),
            str(len(rems)),
            str(len(adds)),
            # A copy is not served: nobody needs to hear about it.
            "" if self._fixed else self.keys.changes,
            "" if self._fixed else change_message(gen, new, changes, rems + adds, self.keys),
        ]
        args += sets + dels + [m for _, m in rems] + [m for _, m in adds]
        if seg is not None:
            keys += [self.keys.checkpoint(gen), *self._segment_keys(gen)]
            args.append(str(seg.count))
        outcome, found = await self._apply(keys=keys, args=args)
        if outcome == b"ok":
            return
        if outcome == b"generation":
            if not found:
                raise StoreLost(self.name, "has no active generation", expected)
            raise CheckpointMoved(expected, None, f"(generation now {found.decode()})")
        if not found:
            raise StoreLost(self.name, f"generation {gen} has lost its checkpoint", expected)
        raise CheckpointMoved(expected, Position.from_checkpoint(found))

    async def all_documents(self) -> dict[str, Message]:
        if self._shards:
            every: dict[str, Message] = {}
            for shard in self._shards:
                every |= await shard.all_documents()
            return every
        gen = await self._readable_generation()
        if gen is None:
            return {}
        # HSCAN, not HGETALL: a big projection's hash is read without blocking Redis.
        return {
            ident.decode(): self._parse(raw)
            async for ident, raw in self._client.hscan_iter(self.keys.docs(gen), count=_SCAN_COUNT)
        }

    async def index_members(self) -> dict[str, set[str]]:
        """Every index of the generation: suffix (e.g. ``status:PENDING``) -> members (of a
        spread projection: of every shard's)."""
        if self._shards:
            merged: dict[str, set[str]] = {}
            for shard in self._shards:
                for suffix, members in (await shard.index_members()).items():
                    merged.setdefault(suffix, set()).update(members)
            return merged
        gen = await self._readable_generation()
        if gen is None:
            return {}
        prefix = self.keys.index(gen, "")
        keys = [k async for k in self._scan(glob_escape(prefix) + "*")]
        pipe = self._client.pipeline(transaction=False)
        for key in keys:
            pipe.zrange(key, 0, -1)
        results = await pipe.execute() if keys else []
        return {
            key[len(prefix) :]: {m.decode() for m in members}
            for key, members in zip(keys, results, strict=True)
        }

    # -- copies -----------------------------------------------------------------------------

    async def new_copy(self) -> RedisProjectionStore:
        if self._shards:
            raise TypeError(f"{self.name} is spread: each of its segments is rebuilt alone")
        for gen in await delete_abandoned(self._client, self.keys):
            log.info("%s: deleted abandoned generation %d", self.name, gen)
        gen = await new_generation(self._client, self.keys)
        if self.builds_alone:
            # A shard's copy: its keyspace, and only the aggregates its segment owns.
            return RedisProjectionStore(
                self._client,
                self._prefix,
                self.kind,
                generation=gen,
                grace_s=self._grace_s,
                segments=self.segments,
                segment=self.segment,
                spread=True,
            )
        return RedisProjectionStore(
            self._client, self._prefix, self.kind, generation=gen, grace_s=self._grace_s
        )

    async def switch_to(self, copy: ProjectionStore, catch_up: StoreCatchUp) -> Position:
        if not isinstance(copy, RedisProjectionStore) or copy.generation is None:
            raise TypeError(f"cannot switch {self.name} to {copy.name}")
        gen = copy.generation
        while True:
            position = await catch_up(copy, None)
            result = await activate_generation(
                self._client, self.keys, gen, self._segment_keys(gen), self._guesses
            )
            if result.lost:
                raise StoreLost(copy.name, "vanished before it could be switched in")
            if result.switched:
                break
            log.info("%s: the live generation is ahead (%s); catching up", copy.name, result)
        self._gen = gen
        if result.previous is not None and result.previous != gen:
            # A runner may be mid-batch on the old generation: its commit fails the
            # generation check and it reloads. Give it a moment before deleting.
            await asyncio.sleep(self._grace_s)
            await delete_generation(self._client, self.keys, result.previous)
        return position

    async def discard(self) -> None:
        if self._fixed and self._gen is not None:
            await delete_generation(self._client, self.keys, self._gen)

    async def describe(self) -> str:
        if self._shards:
            described = [await shard.describe() for shard in self._shards]
            return "shards: " + ", ".join(described)
        await self.checkpoint()
        return f"generation {self._gen}"

    async def integrity_state(self) -> _Indexes:
        return _Indexes(self.kind, await self.index_members())

    # -- internals --------------------------------------------------------------------------

    def _segment_key(self, gen: int, segment: Segment) -> str:
        return self.keys.segment_checkpoint(gen, segment.label)

    def _segment_keys(self, gen: int) -> list[str]:
        """Every segment's checkpoint key (none: not split, or spread: each in its own)."""
        if self.segments == 1 or self.spread:
            return []
        return [self._segment_key(gen, s) for s in all_segments(self.segments)]

    async def _readable_generation(self) -> int | None:
        """The generation to read whole (``None``: nothing to read)."""
        if self._fixed:
            return self._gen
        try:
            await self.checkpoint()
        except StoreLost:
            return self._gen  # an active generation without checkpoint still has keys
        return self._gen

    def _index_changes(
        self, gen: int, changes: Iterable[Change]
    ) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        rems: list[tuple[str, str]] = []
        adds: list[tuple[str, str]] = []
        for change in changes:
            old = self._memberships(gen, change.before)
            new = self._memberships(gen, change.after)
            rems += sorted(old - new)
            adds += sorted(new - old)
        return rems, adds

    def _memberships(self, gen: int, doc: Message | None) -> set[tuple[str, str]]:
        if doc is None:
            return set()
        m = member(doc)
        return {(self.keys.index(gen, suffix), m) for suffix in self.kind.index_keys(doc)}

    async def _scan(self, pattern: str) -> AsyncIterator[str]:
        async for key in self._client.scan_iter(match=pattern, count=_SCAN_COUNT):
            yield key.decode() if isinstance(key, bytes) else str(key)

    def _parse(self, raw: bytes | str) -> Message:
        if not isinstance(raw, bytes):
            raise TypeError("the Redis client must not decode responses (documents are bytes)")
        doc = self.kind.document()
        doc.ParseFromString(raw)
        return doc


class _Indexes:
    """A generation's index memberships, checked against the documents they index."""

    def __init__(self, kind: Entity, members: Mapping[str, set[str]]) -> None:
        self._kind = kind
        self._members = members

    def problems(self, expected: Mapping[str, Message], skip: Collection[str]) -> list[str]:
        want_all: dict[str, set[str]] = {}
        for doc_id, doc in expected.items():
            if doc_id in skip:
                continue
            for suffix in self._kind.index_keys(doc):
                want_all.setdefault(suffix, set()).add(member(doc))
        problems: list[str] = []
        for suffix in sorted(want_all.keys() | self._members.keys()):
            want = want_all.get(suffix, set())
            got = {m for m in self._members.get(suffix, set()) if _member_id(m) not in skip}
            problems += [f"idx:{suffix}: missing member {m}" for m in sorted(want - got)]
            problems += [f"idx:{suffix}: extra member {m}" for m in sorted(got - want)]
        return problems


def _member_id(index_member: str) -> str:
    """The document id of an index member (``<created_us hex>|<id>``)."""
    return index_member.rpartition("|")[2]
