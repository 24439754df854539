"""The Lua scripts of the Redis projections (``common/lua``), for the projector and the readers.

Every script is given every key it touches in ``KEYS`` and builds none, as Redis Cluster
requires: the cluster routes a call by its keys, and during a live reshard redirects it
(ASK, TRYAGAIN) rather than let it read a key that has already moved to another node.
A generation's keys are named before the script learns which generation is active, so
the caller names those of the generation it last saw active (:class:`GenerationGuesses`);
the script checks ``active`` and, when the guess is wrong, replies :data:`MOVED` with the
active one, and the caller asks again. The readers' scripts share one prelude
(``read_prelude.lua``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import cache
from importlib import resources
from typing import Any

from common.redis_keys import ProjectionKeys

# A script's reply {MOVED, g}: the active generation is g, not the one the keys named.
MOVED = 3
# A generation changes when a rebuild switches one in: two guesses settle it (the first
# from nothing); more means switches in a row, a rebuild loop gone wrong.
_MAX_GUESSES = 4


class GenerationMoving(Exception):
    """The active generation changed under every guess (switches in a row)."""


@cache
def script(*parts: str) -> str:
    """The concatenated text of ``parts`` (file names in ``common/lua``)."""
    folder = resources.files("common").joinpath("lua")
    return "\n".join(folder.joinpath(part).read_text("utf-8") for part in parts)


READ_PRELUDE = "read_prelude.lua"
GET = (READ_PRELUDE, "get.lua")
LIST = (READ_PRELUDE, "list.lua")
ACTIVE_CHECKPOINT = ("active_checkpoint.lua",)
APPLY_BATCH = ("apply_batch.lua",)
SWITCH_GENERATION = ("switch_generation.lua",)


class GenerationGuesses:
    """The generation each projection was last seen active in, for naming a script's keys.

    Generation 0 never exists (numbers start at 1), so the first call names nothing real
    and learns the active generation from the script's :data:`MOVED` reply.
    """

    def __init__(self) -> None:
        self._seen: dict[str, int] = {}

    def last(self, keys: ProjectionKeys) -> int:
        """The generation last seen active (0: none yet)."""
        return self._seen.get(keys.base, 0)

    async def call(self, keys: ProjectionKeys, attempt: Callable[[int], Awaitable[Any]]) -> Any:
        """``attempt(generation)``'s reply, asked again while it says :data:`MOVED`."""
        for _ in range(_MAX_GUESSES):
            reply = await attempt(self.last(keys))
            if not (isinstance(reply, list) and len(reply) == 2 and reply[0] == MOVED):
                return reply
            self._seen[keys.base] = int(reply[1])
        raise GenerationMoving(f"{keys.base}: the active generation keeps changing")
