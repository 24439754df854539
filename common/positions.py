"""Positions in the event log, consistency tokens and checkpoint strings.

A position is ``(xid, seq)``: the writing transaction's ``xid8`` and the event's
global sequence. The projector applies events in this order, and only below the
oldest in-flight transaction, so "checkpoint >= position" means "applied".
"""

from __future__ import annotations

import re
from typing import NamedTuple

_TOKEN_PREFIX = "c1."
# Lower-case hex without leading zeros, at most 16 digits each: exactly what
# encode_token writes for values that fit a PostgreSQL bigint (checkpoint columns).
_TOKEN = re.compile(r"c1\.(0|[1-9a-f][0-9a-f]{0,15})\.(0|[1-9a-f][0-9a-f]{0,15})")
MAX_POSITION_VALUE = 2**63 - 1


class Position(NamedTuple):
    """A point in the event log; tuples compare in projector order."""

    xid: int
    seq: int

    def to_checkpoint(self) -> str:
        """Fixed-width text form: compares (as a string, e.g. in Lua) like the tuple."""
        return f"{self.xid:020d}:{self.seq:020d}"

    @classmethod
    def from_checkpoint(cls, text: str | bytes | None) -> Position:
        if not text:
            return ORIGIN
        if isinstance(text, bytes):
            text = text.decode()
        xid, seq = text.split(":")
        return cls(int(xid), int(seq))


ORIGIN = Position(0, 0)


class InvalidToken(ValueError):
    """The string is not a consistency token this server issued."""


def encode_token(position: Position) -> str:
    """The opaque consistency token a command reply carries."""
    return f"{_TOKEN_PREFIX}{position.xid:x}.{position.seq:x}"


def decode_token(token: str) -> Position | None:
    """``None`` for an empty token (don't wait); :class:`InvalidToken` unless it is
    exactly a token :func:`encode_token` could have written."""
    if not token:
        return None
    match = _TOKEN.fullmatch(token)
    if match is None:
        raise InvalidToken(token[:40])
    position = Position(int(match[1], 16), int(match[2], 16))
    if position.xid > MAX_POSITION_VALUE or position.seq > MAX_POSITION_VALUE:
        raise InvalidToken(token)
    return position
