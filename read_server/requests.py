"""Validation of QueryService requests into what the sources take.

A :class:`RequestParser` collects every bad field of one request so the client
gets all of them in one ``google.rpc.BadRequest``.
"""

from __future__ import annotations

import uuid

from common.cursors import InvalidPageToken, decode_page_token, resolve_page_size
from common.documents import status_name
from common.errors import FieldViolation, InvalidArgument
from common.pb.shop.v1 import query_service_pb2, shop_pb2
from common.positions import InvalidToken, decode_token
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
        try:
            return str(uuid.UUID(value))
        except ValueError:
            self._bad(field, "must be a UUID")
            return ""

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

    def status(self, value: int) -> str | None:
        """``None`` (any status) for ORDER_STATUS_UNSPECIFIED, else e.g. ``"PENDING"``."""
        if value == shop_pb2.ORDER_STATUS_UNSPECIFIED:
            return None
        try:
            return status_name(value)
        except ValueError:
            self._bad("status", f"unknown order status {value}")
            return None

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
