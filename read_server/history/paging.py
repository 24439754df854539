"""Page tokens of GetAggregateHistory: keyset on the aggregate's version.

A token names the aggregate it was issued for and the last version returned; the
next page is ``aggregate_version > version`` (the UNIQUE (aggregate_id,
aggregate_version) index). Opaque to clients (base64url), validated strictly: a
token of another aggregate, or anything this server could not have written, is
rejected rather than silently restarting or skipping.
"""

from __future__ import annotations

import re

from common.cursors import from_token, to_token

_PREFIX = "h1"
_TOKEN = re.compile(
    r"h1\|([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\|([1-9][0-9]{0,18})"
)
_MAX_TOKEN = 96
_MAX_VERSION = 2**63 - 1


class InvalidHistoryToken(ValueError):
    """Not a token this server issued for this aggregate."""


def encode_history_token(aggregate_id: str, version: int) -> str:
    """The token of the page after ``version`` of ``aggregate_id`` (a canonical UUID)."""
    raw = f"{_PREFIX}|{aggregate_id}|{version}"
    return to_token(raw)


def decode_history_token(token: str, aggregate_id: str) -> int:
    """The version to continue after: 0 for the first page (empty token)."""
    if not token:
        return 0
    if len(token) > _MAX_TOKEN:
        raise InvalidHistoryToken("too long")
    try:
        raw = from_token(token)
    except ValueError as exc:
        raise InvalidHistoryToken("not base64") from exc
    match = _TOKEN.fullmatch(raw)
    if match is None or int(match[2]) > _MAX_VERSION:
        raise InvalidHistoryToken("malformed")
    if match[1] != aggregate_id:
        raise InvalidHistoryToken("issued for another aggregate")
    return int(match[2])
