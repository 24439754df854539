"""Positions in the event log, consistency tokens and checkpoint strings.

A position is ``(xid, seq)``: the writing transaction's ``xid8`` and the event's
global sequence. The projector applies events in this order, and only below the
oldest in-flight transaction, so "checkpoint >= position" means "applied".
"""

from __future__ import annotations

from typing import NamedTuple

_TOKEN_PREFIX = "c1."


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
    """``None`` for an empty token (don't wait); :class:`InvalidToken` if malformed."""
    if not token:
        return None
    if not token.startswith(_TOKEN_PREFIX):
        raise InvalidToken(token)
    try:
        xid_hex, seq_hex = token[len(_TOKEN_PREFIX) :].split(".")
        position = Position(int(xid_hex, 16), int(seq_hex, 16))
    except ValueError as exc:
        raise InvalidToken(token) from exc
    if position.xid < 0 or position.seq < 0:
        raise InvalidToken(token)
    return position
