"""Validation of QueryService requests into what the sources take.

A :class:`RequestParser` collects every bad field of one request so the client
gets all of them in one ``google.rpc.BadRequest``. Every field is checked here, before
any source, cache or store sees the request: text no longer than the write side could
have stored (:mod:`common.field_limits`), no NUL characters, ids that are UUIDs, tokens
this server issued. A read's key can therefore never be larger than a stored value's.
"""

from __future__ import annotations

import uuid
from typing import Any

from google.protobuf.message import Message

from common.cursors import InvalidPageToken, decode_page_token, resolve_page_size
from common.entities import Entity
from common.entities._model import enum_label
from common.errors import FieldViolation, InvalidArgument
from common.field_limits import MAX_TEXT, MAX_UUID_CHARS
from common.pb.shop.v1 import query_service_pb2
from common.positions import InvalidToken, Position, decode_token
from read_server.sources.base import Freshness, PageRequest, QuerySource, SourceSet


class RequestParser:
    """Parses fields one by one; :meth:`done` raises ``InvalidArgument`` if any was bad.

    A bad field yields a harmless placeholder, never used because ``done``
    raises before the request reaches a source.
    """

    def __init__(self) -> None:
        self._violations: list[FieldViolation] = []

    def _bad(self, field: str, description: str) -> None:
        self._violations.append(FieldViolation(field, description))

    def bad(self, field: str, description: str) -> None:
        """Record a violation found by a check of the caller's own."""
        self._bad(field, description)

    def entity_id(self, value: str, field: str = "id") -> str:
        """A required UUID, canonicalized (lowercase, hyphenated) as every source keys it."""
        canonical = self.optional_id(value, field)
        if canonical is None:
            self._bad(field, "is required")
            return ""
        return canonical

    def optional_id(self, value: str, field: str) -> str | None:
        """``None`` for an empty value, else the canonical UUID."""
        if not value:
            return None
        # uuid.UUID ignores any number of hyphens: bound the spelling first.
        if len(value) <= MAX_UUID_CHARS:
            try:
                return str(uuid.UUID(value))
            except ValueError:
                pass
        self._bad(field, "must be a UUID")
        return ""

    def text(self, value: str, field: str, limit: int = MAX_TEXT) -> str:
        """A free-text filter (e.g. a category): at most ``limit`` characters, as the
        write side stores them, and no NUL character."""
        if len(value) > limit:
            self._bad(field, f"must be at most {limit} characters")
            return ""
        if "\x00" in value:
            self._bad(field, "must not contain NUL characters (U+0000)")
            return ""
        return value

    def page_size(self, value: int) -> int:
        """The page size asked for (0: the default), within the maximum."""
        try:
            return resolve_page_size(value)
        except ValueError as exc:
            self._bad("page_size", str(exc))
            return 1

    def page(self, page_size: int, page_token: str) -> PageRequest:
        size = self.page_size(page_size)
        try:
            after = decode_page_token(page_token)
        except InvalidPageToken:
            self._bad("page_token", "is not a page token issued by this server")
            after = None
        return PageRequest(size, after)

    def freshness(self, consistency_token: str, max_wait_s: float) -> Freshness:
        try:
            position = decode_token(consistency_token)
        except InvalidToken:
            self._bad("consistency_token", "is not a consistency token issued by this server")
            position = None
        return Freshness(position, max_wait_s)

    def enum(self, request: Message, field: str) -> str | None:
        """An enum filter of ``request``: ``None`` (no filter) for its zero value (the
        ``*_UNSPECIFIED`` one), else its label, e.g. ``"PENDING"``."""
        descriptor: Any = request.DESCRIPTOR.fields_by_name[field]
        value = int(getattr(request, field))
        if value == 0:
            return None
        if value not in descriptor.enum_type.values_by_number:
            self._bad(field, f"unknown {descriptor.enum_type.name} {value}")
            return None
        return enum_label(descriptor, value)

    def where(self, entity: Entity, request: Message) -> dict[str, str]:
        """The list filters of ``entity`` that ``request`` sets (its fields of those names)."""
        found: dict[str, str] = {}
        for field, kind in entity.filters.items():
            raw: Any = getattr(request, field)
            value = (
                self.optional_id(raw, field)
                if kind == "uuid"
                else self.enum(request, field)
                if kind == "enum"
                else self.text(raw, field) or None
            )
            if value is not None:
                found[field] = value
        return found

    def position(self, value: str, field: str) -> Position | None:
        """A position a server gave (a consistency token, e.g. a Watch message's)."""
        try:
            return decode_token(value)
        except InvalidToken:
            self._bad(field, "is not a position issued by this server")
            return None

    def projection_only(self, value: int) -> None:
        """Watch streams follow the projection: only that source (or none) is taken."""
        if value not in (query_service_pb2.SOURCE_UNSPECIFIED, query_service_pb2.SOURCE_PROJECTION):
            self._bad("source", "Watch streams follow the projection: SOURCE_PROJECTION or none")

    def source(self, value: int, sources: SourceSet) -> QuerySource:
        if value in (query_service_pb2.SOURCE_UNSPECIFIED, query_service_pb2.SOURCE_PROJECTION):
            return sources.projection
        if value == query_service_pb2.SOURCE_READ_MODEL:
            return sources.read_model
        if value == query_service_pb2.SOURCE_WRITE_MODEL:
            return sources.write_model
        self._bad("source", f"unknown source {value}")
        return sources.projection

    def done(self) -> None:
        if self._violations:
            raise InvalidArgument(self._violations)
