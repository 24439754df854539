"""The Lua scripts of the Redis projections (``common/lua``), for the projector and the readers.

Every script takes the projection's base key ``P:{proj}`` (:attr:`ProjectionKeys.base`)
and derives a generation's keys as ``base .. ':g' .. G .. ':'``, exactly as
:meth:`ProjectionKeys.generation` does: all in the slot of the projection's hash tag, on
one Redis or on one node of a cluster. The readers' scripts share one prelude
(``read_prelude.lua``) that resolves the active generation.
"""

from __future__ import annotations

from functools import cache
from importlib import resources


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
