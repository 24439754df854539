"""Keyset pagination shared by every read source.

Lists are ordered newest first, ties broken by id (both descending). A page
token encodes the last item's ``(created_at, id)``; every source resumes
strictly after it, so all three sources page identically.
"""

from __future__ import annotations

import base64
import binascii
import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# A member: 16 lower-case hex digits of microseconds, '|', a canonical UUID.
_MEMBER = re.compile(
    r"([0-9a-f]{16})\|([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})"
)
_MAX_TOKEN = 80


def to_token(text: str) -> str:
    """ASCII ``text`` as an opaque token: unpadded URL-safe base64 (page tokens of every
    kind are made this way)."""
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def from_token(token: str) -> str:
    """The ASCII text a :func:`to_token` token carries; ``ValueError`` if it carries none."""
    try:
        return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode("ascii")
    except (ValueError, binascii.Error) as exc:
        raise ValueError("not a token") from exc


class InvalidPageToken(ValueError):
    """The page token was not issued by this server."""


class SortKey(NamedTuple):
    created_us: int  # microseconds since the Unix epoch
    id: str  # canonical lowercase UUID

    def member(self) -> str:
        """The Redis lexicographic index member: compares like (created_us, id)."""
        return f"{self.created_us:016x}|{self.id}"

    @property
    def created_at(self) -> datetime:
        return from_micros(self.created_us)

    @classmethod
    def from_member(cls, member: str | bytes) -> SortKey:
        if isinstance(member, bytes):
            member = member.decode()
        ts, ident = member.split("|", 1)
        return cls(int(ts, 16), ident)


def member_id(member: bytes) -> str:
    """The id in a Redis index member (``{created_us:016x}|{id}``), without parsing the
    rest (the near-cache records a page's ids)."""
    return member.partition(b"|")[2].decode()


def to_micros(ts: datetime) -> int:
    """Microseconds since the Unix epoch."""
    delta = ts - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


def sort_key(created_at: datetime, ident: str | uuid.UUID) -> SortKey:
    return SortKey(to_micros(created_at), str(ident))


def encode_page_token(key: SortKey) -> str:
    return to_token(key.member())


def decode_page_token(token: str) -> SortKey | None:
    """``None`` for the first page; :class:`InvalidPageToken` unless it is exactly a
    token :func:`encode_page_token` could have written for a representable time."""
    if not token:
        return None
    if len(token) > _MAX_TOKEN:
        raise InvalidPageToken("page_token is not valid")
    try:
        raw = from_token(token)
    except ValueError as exc:
        raise InvalidPageToken("page_token is not valid") from exc
    match = _MEMBER.fullmatch(raw)
    if match is None:
        raise InvalidPageToken("page_token is not valid")
    key = SortKey(int(match[1], 16), match[2])
    # Every source must be able to turn it into a timestamp (datetime stops at year 9999).
    if key.created_us > MAX_MICROS or encode_page_token(key) != token:
        raise InvalidPageToken("page_token is not valid")
    return key


def resolve_page_size(page_size: int) -> int:
    """0 means the default; negative or above the maximum is an error (ValueError)."""
    if page_size == 0:
        return DEFAULT_PAGE_SIZE
    if page_size < 0 or page_size > MAX_PAGE_SIZE:
        raise ValueError(
            f"page_size must be between 1 and {MAX_PAGE_SIZE} (0 = {DEFAULT_PAGE_SIZE})"
        )
    return page_size


MAX_MICROS = to_micros(datetime.max.replace(tzinfo=UTC))


class InvalidScopedToken(ValueError):
    """Not a token this server issued for this scope."""


_SCOPED_MAX_TOKEN = 96
_SCOPED_MAX_AFTER = 2**63 - 1  # a bigint


class ScopedTokens:
    """Page tokens of a keyset on a positive bigint within one scope (a UUID): the history
    of one aggregate, the deliveries of one subscription. ``kind`` (e.g. ``h1``) tells the
    token kinds apart. Validated strictly: a token of another scope, or anything this server
    could not have written, is rejected rather than silently restarting or skipping."""

    def __init__(self, kind: str) -> None:
        self._kind = kind
        self._pattern = re.compile(
            re.escape(kind) + r"\|([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})"
            r"\|([1-9][0-9]{0,18})"
        )

    def encode(self, scope: str, after: int) -> str:
        """The token of the page after ``after`` in ``scope`` (a canonical UUID)."""
        return to_token(f"{self._kind}|{scope}|{after}")

    def decode(self, token: str, scope: str) -> int:
        """Where to continue after: 0 for the first page (empty token)."""
        if not token:
            return 0
        if len(token) > _SCOPED_MAX_TOKEN:
            raise InvalidScopedToken("too long")
        try:
            raw = from_token(token)
        except ValueError as exc:
            raise InvalidScopedToken("not base64") from exc
        match = self._pattern.fullmatch(raw)
        if match is None or int(match[2]) > _SCOPED_MAX_AFTER:
            raise InvalidScopedToken("malformed")
        if match[1] != scope:
            raise InvalidScopedToken("issued for another scope")
        return int(match[2])
