"""Redis projection store (layout in docs/ARCHITECTURE.md and :mod:`redis_keys`).

Documents are pre-serialized protobuf bytes; list indexes are lexicographic
zsets (all scores 0) of ``SortKey.member()``. A batch is one Lua script call
that checks the active generation and the checkpoint, then applies every
document and index change and the new checkpoint.

A *live* store follows ``P:proj:active`` (resolved by :meth:`checkpoint`); a store
bound to a fixed generation writes that generation only (a rebuild filling a new
one before it is activated).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection, Iterable, Sequence

from google.protobuf.message import Message
from redis.asyncio import Redis

from common.cursors import SortKey
from common.positions import ORIGIN, Position
from common.redis_keys import ProjectionKeys, glob_escape
from projector.projections import REDIS, ProjectionKind, member, projection_name
from projector.stores import redis_scripts
from projector.stores.port import Change, CheckpointMoved

_SCAN_COUNT = 1000
_MGET_CHUNK = 1000


class RedisProjectionStore:
    """One Redis projection; ``client`` is the process's shared connection pool."""

    def __init__(
        self,
        client: Redis,
        prefix: str,
        kind: ProjectionKind,
        *,
        generation: int | None = None,
    ) -> None:
        self.kind = kind
        self.keys = ProjectionKeys(prefix, kind.name)
        self._client = client
        self._fixed = generation is not None
        self._gen = generation
        self._initialize = client.register_script(redis_scripts.INITIALIZE)
        self._active_checkpoint = client.register_script(redis_scripts.ACTIVE_CHECKPOINT)
        self._apply = client.register_script(redis_scripts.APPLY_BATCH)

    @property
    def name(self) -> str:
        name = projection_name(REDIS, self.kind)
        return f"{name}@g{self._gen}" if self._fixed else name

    @property
    def generation(self) -> int | None:
        """The generation read and written (as last resolved, for a live store)."""
        return self._gen

    async def initialize(self) -> None:
        if self._fixed:
            return  # created with its checkpoint by redis_generations.new_generation
        active = await self._initialize(
            keys=[self.keys.active, self.keys.next_gen],
            args=[self.keys.base + ":", ORIGIN.to_checkpoint()],
        )
        self._gen = int(active)

    async def checkpoint(self) -> Position:
        if self._fixed:
            assert self._gen is not None
            return Position.from_checkpoint(await self._client.get(self.keys.checkpoint(self._gen)))
        found = await self._active_checkpoint(keys=[self.keys.active], args=[self.keys.base + ":"])
        if not found:
            self._gen = None
            return ORIGIN
        gen, checkpoint = found
        self._gen = int(gen)
        return Position.from_checkpoint(checkpoint)

    async def load(self, ids: Collection[str]) -> dict[str, Message]:
        if self._gen is None or not ids:
            return {}
        gen = self._gen
        ordered = list(ids)
        raw = await self._client.mget([self.keys.doc(gen, i) for i in ordered])
        return {i: self._parse(r) for i, r in zip(ordered, raw, strict=True) if r is not None}

    async def order_ids_by_customer(self, customer_ids: Collection[str]) -> dict[str, list[str]]:
        if self._gen is None or not customer_ids:
            return {cid: [] for cid in customer_ids}
        ordered = list(customer_ids)
        pipe = self._client.pipeline(transaction=False)
        for cid in ordered:
            pipe.zrange(self.keys.index(self._gen, f"customer:{cid}"), 0, -1)
        results = await pipe.execute()
        return {
            cid: [SortKey.from_member(m).id for m in members]
            for cid, members in zip(ordered, results, strict=True)
        }

    async def commit(self, expected: Position, new: Position, changes: Sequence[Change]) -> None:
        gen = self._gen
        if gen is None:
            raise CheckpointMoved(expected, None, "(no active generation)")
        sets: list[tuple[str, bytes]] = []
        dels: list[str] = []
        for change in changes:
            key = self.keys.doc(gen, change.id)
            if change.after is None:
                dels.append(key)
            else:
                sets.append((key, change.after.SerializeToString()))
        rems, adds = self._index_changes(gen, changes)
        keys = [self.keys.active, self.keys.checkpoint(gen)]
        keys += [k for k, _ in sets] + dels + [k for k, _ in rems] + [k for k, _ in adds]
        args: list[str | bytes] = [
            "" if self._fixed else str(gen),
            expected.to_checkpoint(),
            new.to_checkpoint(),
            str(len(sets)),
            str(len(dels)),
            str(len(rems)),
            str(len(adds)),
        ]
        args += [v for _, v in sets] + [m for _, m in rems] + [m for _, m in adds]
        outcome, found = await self._apply(keys=keys, args=args)
        if outcome != b"ok":
            detail = (
                f"(generation now {found.decode() or 'none'})" if outcome == b"generation" else ""
            )
            raise CheckpointMoved(
                expected,
                Position.from_checkpoint(found) if outcome == b"checkpoint" else None,
                detail,
            )

    async def all_documents(self) -> dict[str, Message]:
        if not self._fixed:
            await self.checkpoint()
        if self._gen is None:
            return {}
        prefix = self.keys.doc(self._gen, "")
        keys = [k async for k in self._scan(glob_escape(prefix) + "*")]
        docs: dict[str, Message] = {}
        for start in range(0, len(keys), _MGET_CHUNK):
            chunk = keys[start : start + _MGET_CHUNK]
            for key, raw in zip(chunk, await self._client.mget(chunk), strict=True):
                if raw is not None:
                    docs[key[len(prefix) :]] = self._parse(raw)
        return docs

    async def index_members(self) -> dict[str, set[str]]:
        """Every index of the generation: suffix (e.g. ``status:PENDING``) -> members."""
        if not self._fixed:
            await self.checkpoint()
        if self._gen is None:
            return {}
        prefix = self.keys.index(self._gen, "")
        keys = [k async for k in self._scan(glob_escape(prefix) + "*")]
        pipe = self._client.pipeline(transaction=False)
        for key in keys:
            pipe.zrange(key, 0, -1)
        results = await pipe.execute() if keys else []
        return {
            key[len(prefix) :]: {m.decode() for m in members}
            for key, members in zip(keys, results, strict=True)
        }

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
