"""A read-model table's columns, derived from the document's protobuf fields.

Every read-model row holds the document itself (``doc``, its wire bytes, which the read
server returns untouched) and, beside it, the fields reads filter and sort on and verify
checks against it. The columns follow the protobuf types: strings are ``text`` (``id``
and ``*_id`` are ``uuid``), integers ``bigint``/``integer``, enums their label as
``text``, timestamps ``timestamptz``, and a repeated message a ``jsonb`` array with a
``<name>_count`` beside it.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import orjson
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from common.documents import DOCUMENT_TAIL, to_datetime
from common.entities._model import Column, enum_label

_SCALARS = {
    FieldDescriptor.TYPE_STRING: "text",
    FieldDescriptor.TYPE_INT64: "bigint",
    FieldDescriptor.TYPE_INT32: "integer",
}


def columns(document: type[Message], fields: Sequence[str]) -> tuple[Column, ...]:
    """``id``, ``fields`` and version/created_at/updated_at as read-model columns."""
    descriptor = document.DESCRIPTOR
    found: list[Column] = []
    for name in ("id", *fields, *DOCUMENT_TAIL):
        found += _column(descriptor.fields_by_name[name])
    return tuple(found)


def _column(field: Any) -> list[Column]:
    # ``field``: a protobuf FieldDescriptor, of either implementation (upb or Python).
    name = field.name
    message = field.message_type
    if message is not None and message.full_name == "google.protobuf.Timestamp":
        return [Column(name, "timestamptz", _timestamp(name))]
    if field.is_repeated and message is not None:
        return [
            Column(name, "text", _json_list(name), f"u.{name}::jsonb"),
            Column(f"{name}_count", "integer", _count(name)),
        ]
    if field.type == FieldDescriptor.TYPE_ENUM:
        return [Column(name, "text", _enum(field))]
    if field.type == FieldDescriptor.TYPE_STRING and (name == "id" or name.endswith("_id")):
        return [Column(name, "uuid", operator.attrgetter(name))]
    return [Column(name, _SCALARS[field.type], operator.attrgetter(name))]


def _timestamp(name: str) -> Callable[[Any], object]:
    return lambda doc: to_datetime(getattr(doc, name))


def _enum(field: Any) -> Callable[[Any], object]:
    return lambda doc: enum_label(field, int(getattr(doc, field.name)))


def _count(name: str) -> Callable[[Any], object]:
    return lambda doc: len(getattr(doc, name))


def _json_list(name: str) -> Callable[[Any], object]:
    def value(doc: Any) -> str:
        items = getattr(doc, name)
        return orjson.dumps([_as_dict(item) for item in items]).decode()

    return value


def _as_dict(item: Message) -> dict[str, object]:
    return {f.name: getattr(item, f.name) for f in item.DESCRIPTOR.fields}


def differences(cols: Sequence[Column], row: Mapping[str, Any], doc: Message) -> list[str]:
    """The columns of ``row`` that disagree with ``doc`` (the document the row holds):
    ``name: column=<value> document=<value>``, one per column."""
    found: list[str] = []
    for col in cols:
        want, got = col.value(doc), row[col.name]
        if col.select.endswith("::jsonb"):
            want, got = orjson.loads(str(want)), orjson.loads(str(got))
        elif col.array_type == "uuid":
            got = str(got)
        if want != got:
            found.append(f"{col.name}: column={got!r} document={want!r}")
    return found
