"""The base of consumers whose effects leave the system (the NATS relay, the webhook
fan-out, the payments process manager).

What they did cannot be taken back or done again into a copy, so they are never rebuilt
(``rebuildable = False``: ``cqrs projector rebuild`` leaves them out and ``new_copy``
raises :class:`~projector.errors.NotRebuildable`), hold nothing ``verify`` could compare,
and keep a checkpoint row that a first start creates at the origin instead of calling the
state lost (there is nothing to rebuild; each one skips what it already did). The relay, the
webhook fan-out and the snapshots can be rewound to a position instead (a ``rewind`` method:
:mod:`projector.rewind`); payments says why not in ``not_rewound_because``.
"""

from __future__ import annotations

import asyncpg

from common.positions import Position
from projector.consumer import Audit, CatchUp, Consumer, Reference
from projector.errors import CheckpointMoved, NotRebuildable, StoreLost
from projector.outbox import Batch
from projector.stores import pg_checkpoints


class Outbound:
    """Mixin: set ``_pool`` and ``name``; ``not_rebuilt_because`` says why in errors."""

    rebuildable = False
    not_rebuilt_because = "what it sent out stays sent"
    _pool: asyncpg.Pool

    @property
    def name(self) -> str:
        raise NotImplementedError

    async def checkpoint(self) -> Position:
        """The stored checkpoint; a missing row is created at the origin."""
        return await pg_checkpoints.read_or_start(self._pool, self.name)

    async def _advance(self, db: pg_checkpoints.Db, batch: Batch) -> None:
        """Move the checkpoint over ``batch`` (:func:`pg_checkpoints.advance`: alone on the
        pool, or first in the caller's transaction). A missing row is not a loss here: the
        runner reads the checkpoint again, which creates it at the origin."""
        try:
            await pg_checkpoints.advance(db, self.name, batch.start, batch.next)
        except StoreLost as exc:
            raise CheckpointMoved(batch.start, None, "(its row is gone)") from exc

    async def new_copy(self) -> Consumer:
        raise NotRebuildable(f"{self.name} is not rebuilt: {self.not_rebuilt_because}")

    async def switch_to(self, copy: Consumer, catch_up: CatchUp) -> Position:
        raise NotRebuildable(f"{self.name} has no copies")

    async def discard(self) -> None:
        raise NotRebuildable(f"{self.name} has no copies")

    async def aclose(self) -> None:
        """Nothing of its own to release (a consumer with a client overrides this)."""

    async def audit(self, reference: Reference) -> Audit | None:
        return None  # nothing of its own the write model could be compared with
