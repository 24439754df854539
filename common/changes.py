"""What the projector tells the read servers after each committed Redis batch.

Every batch of a live Redis projection PUBLISHes, inside the same Lua call that
applies it (so in commit order, right after the writes), one message on
``ProjectionKeys.changes``: the generation written, the new checkpoint, the ids of
the documents it changed and the indexes (``idx:...``, as the read scripts name
them) whose membership changed. A generation switch publishes ``{"g": G,
"c": checkpoint, "switch": true}`` (``common/lua/switch_generation.lua``). The read servers'
near-caches drop exactly what a message names and learn from it how fresh they are.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from common.positions import Position


class BadChangeMessage(ValueError):
    """A message on a changes channel that is not one the projector writes."""


@dataclass(frozen=True, slots=True)
class ChangeMessage:
    """One committed batch (``switch`` False) or a generation switch (``switch`` True:
    everything may have changed; ``checkpoint`` is the new generation's)."""

    generation: int
    checkpoint: Position
    ids: frozenset[str]
    indexes: frozenset[str]
    switch: bool = False

    def encode(self) -> bytes:
        assert not self.switch  # switches are published by switch_generation.lua
        return orjson.dumps(
            {
                "g": self.generation,
                "c": self.checkpoint.to_checkpoint(),
                "ids": sorted(self.ids),
                "idx": sorted(self.indexes),
            }
        )

    @classmethod
    def decode(cls, raw: bytes) -> ChangeMessage:
        """The message in ``raw``; :class:`BadChangeMessage` for anything else."""
        try:
            body = orjson.loads(raw)
            generation = body["g"]
            if not isinstance(generation, int) or isinstance(generation, bool):
                raise BadChangeMessage("generation is not an integer")
            checkpoint = Position.from_checkpoint(body["c"])
            if body.get("switch") is True:
                return cls(generation, checkpoint, frozenset(), frozenset(), switch=True)
            ids, indexes = body["ids"], body["idx"]
            if not all(isinstance(x, str) for x in [*ids, *indexes]):
                raise BadChangeMessage("ids and indexes must be strings")
            return cls(generation, checkpoint, frozenset(ids), frozenset(indexes))
        except BadChangeMessage:
            raise
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
            raise BadChangeMessage(f"{type(exc).__name__}: {exc}") from exc
