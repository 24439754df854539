"""Field-by-field comparison of protobuf documents (used by verify)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp


@dataclass(frozen=True, slots=True)
class FieldDiff:
    path: str  # e.g. ``customer_name`` or ``items[2].quantity``
    actual: str  # in the projection
    expected: str  # in the write model


def diff_documents(actual: Message, expected: Message, prefix: str = "") -> list[FieldDiff]:
    """Every field whose value differs (repeated fields element by element)."""
    diffs: list[FieldDiff] = []
    for field in expected.DESCRIPTOR.fields:
        path = prefix + field.name
        a, e = getattr(actual, field.name), getattr(expected, field.name)
        if field.is_repeated:
            if len(a) != len(e):
                diffs.append(FieldDiff(f"{path} (count)", str(len(a)), str(len(e))))
            for i, (ai, ei) in enumerate(zip(a, e, strict=False)):
                diffs += _diff_value(field, f"{path}[{i}]", ai, ei)
        else:
            diffs += _diff_value(field, path, a, e)
    return diffs


def _diff_value(field: Any, path: str, a: Any, e: Any) -> list[FieldDiff]:
    if field.message_type is not None and not isinstance(a, Timestamp):
        return diff_documents(a, e, path + ".")
    if a == e:
        return []
    return [FieldDiff(path, _show(field, a), _show(field, e))]


def _show(field: Any, value: Any) -> str:
    if isinstance(value, Timestamp):
        return value.ToJsonString()
    if field.enum_type is not None:
        known = field.enum_type.values_by_number.get(value)
        return str(known.name) if known is not None else repr(value)
    return repr(value)
