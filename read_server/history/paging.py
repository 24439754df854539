"""Page tokens of GetAggregateHistory: keyset on the aggregate's version.

A token names the aggregate it was issued for and the last version returned; the
next page is ``aggregate_version > version`` (the UNIQUE (aggregate_id,
aggregate_version) index). Opaque to clients (base64url), validated strictly: a
token of another aggregate, or anything this server could not have written, is
rejected rather than silently restarting or skipping.
"""

from __future__ import annotations

from common.cursors import InvalidScopedToken, ScopedTokens

_TOKENS = ScopedTokens("h1")

# Not a token this server issued for this aggregate.
InvalidHistoryToken = InvalidScopedToken


def encode_history_token(aggregate_id: str, version: int) -> str:
    """The token of the page after ``version`` of ``aggregate_id`` (a canonical UUID)."""
    return _TOKENS.encode(aggregate_id, version)


def decode_history_token(token: str, aggregate_id: str) -> int:
    """The version to continue after: 0 for the first page (empty token)."""
    return _TOKENS.decode(token, aggregate_id)
