"""Turning request bytes into a message, for every method of every service.

gRPC answers UNKNOWN when a deserializer raises, so handlers receive the raw
bytes and decode here: undecodable bytes (corrupt wire format, invalid UTF-8 in a
string) and strings holding NUL characters (which PostgreSQL cannot store) become
``InvalidArgument`` before any application code runs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError, Message

from common.errors import FieldViolation, InvalidArgument

Deserializer = Callable[[bytes], Any]


def message_name(deserializer: Deserializer) -> str:
    """``shop.v1.GetProductRequest`` for ``GetProductRequest.FromString``."""
    owner = getattr(deserializer, "__self__", None)
    descriptor = getattr(owner, "DESCRIPTOR", None)
    return str(getattr(descriptor, "full_name", "message"))


def decode(deserializer: Deserializer, raw: bytes, name: str) -> Any:
    """The request in ``raw``; ``InvalidArgument`` if it is not a valid ``name``."""
    try:
        request = deserializer(raw)
    except (DecodeError, ValueError, TypeError) as exc:
        raise InvalidArgument(
            FieldViolation("request", f"is not a valid {name}"),
            message=f"request is not a valid {name}",
        ) from exc
    # A NUL character is encoded as a zero byte: most requests are spared the walk.
    if b"\x00" in raw and isinstance(request, Message):
        violations = nul_violations(request)
        if violations:
            raise InvalidArgument(violations)
    return request


def nul_violations(message: Message, prefix: str = "") -> list[FieldViolation]:
    """One violation per string field (nested and repeated ones too) holding U+0000."""
    found: list[FieldViolation] = []
    for field, value in message.ListFields():
        path = prefix + field.name
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            for key, item in value.items():
                found += _check(field.message_type.fields_by_name["value"], item, f"{path}[{key}]")
        elif field.is_repeated:
            for index, item in enumerate(value):
                found += _check(field, item, f"{path}[{index}]")
        else:
            found += _check(field, value, path)
    return found


def _check(field: FieldDescriptor, value: Any, path: str) -> list[FieldViolation]:
    if field.type == FieldDescriptor.TYPE_STRING and "\x00" in value:
        return [FieldViolation(path, "must not contain NUL characters (U+0000)")]
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        return nul_violations(value, path + ".")
    return []
