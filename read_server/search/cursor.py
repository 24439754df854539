"""Page tokens of search results: keyset ``(rank, id)``, bound to the query they page.

Results are ordered by rank descending, then id ascending, so ``(rank, id)`` of the
last item says exactly where the next page starts. The rank travels as a hex float
(``float.hex``): the float8 PostgreSQL computed comes back bit for bit, so the
next page's ``rank = $r`` comparison is exact. The token also carries a digest of
the entity and the query's ``tsquery`` text: a token presented with another query
(or to the other search) is rejected instead of silently paging a different list.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass

from common.cursors import from_token, to_token
from read_server.search.query import SearchQuery

_DIGEST_CHARS = 16
_TOKEN = re.compile(
    r"([0-9a-f]{16})\|([-+0-9a-fx.p]{1,40})\|"
    r"([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})"
)
_MAX_TOKEN = 160


class InvalidSearchToken(ValueError):
    """The page token was not issued by this server (for this query); the message is
    the field violation's description."""


@dataclass(frozen=True, slots=True)
class SearchCursor:
    """The last item of a page: its rank (float8) and canonical id."""

    rank: float
    id: str


def query_digest(entity: str, query: SearchQuery) -> str:
    """What binds a token to one search (``entity``: products or customers) and query."""
    text = f"{entity}\n{query.tsquery}".encode()
    return hashlib.sha256(text).hexdigest()[:_DIGEST_CHARS]


def encode_search_token(digest: str, cursor: SearchCursor) -> str:
    """The opaque token of the page after ``cursor``."""
    raw = f"{digest}|{cursor.rank.hex()}|{cursor.id}"
    return to_token(raw)


def decode_search_token(token: str) -> tuple[str, SearchCursor] | None:
    """``None`` for the first page, else (digest, cursor); :class:`InvalidSearchToken`
    unless it is exactly what :func:`encode_search_token` writes."""
    if not token:
        return None
    if len(token) > _MAX_TOKEN:
        raise InvalidSearchToken("is not a page token issued by this server")
    try:
        raw = from_token(token)
        match = _TOKEN.fullmatch(raw)
        if match is None:
            raise ValueError(raw)
        rank = float.fromhex(match[2])
    except (ValueError, OverflowError) as exc:
        raise InvalidSearchToken("is not a page token issued by this server") from exc
    cursor = SearchCursor(rank, match[3])
    # Canonical form only: every token has one spelling, and no NaN or infinity
    # (which PostgreSQL would order above every rank) gets through.
    if not math.isfinite(rank) or encode_search_token(match[1], cursor) != token:
        raise InvalidSearchToken("is not a page token issued by this server")
    return match[1], cursor


def cursor_for(entity: str, query: SearchQuery, token: str) -> SearchCursor | None:
    """The cursor in ``token`` if it was issued for this search and query."""
    decoded = decode_search_token(token)
    if decoded is None:
        return None
    digest, cursor = decoded
    if digest != query_digest(entity, query):
        raise InvalidSearchToken("was issued for another query")
    return cursor
