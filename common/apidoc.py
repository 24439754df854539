"""Write the API reference (``docs/API.md``) from the protos' own comments.

Run with ``python -m common.apidoc`` (``make proto`` runs it after the code generation);
``--check`` exits 1 when the committed reference differs from what the protos give now
(``tests/unit/test_api_reference.py``). Every service with its RPCs, then every message and
enum of ``protos/shop/v1`` with its fields, in file order; the text is the comment written
above (or after) each element in the ``.proto`` files.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from google.protobuf import descriptor_pb2

from common import protogen

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "API.md"

# Paths in SourceCodeInfo: field numbers of FileDescriptorProto, DescriptorProto, ...
_MESSAGE, _ENUM, _SERVICE, _SYNTAX = 4, 5, 6, 12
_FIELD, _NESTED, _NESTED_ENUM = 2, 3, 4
_VALUE, _METHOD = 2, 2
_TYPES = {
    number: name.removeprefix("TYPE_").lower()
    for name, number in descriptor_pb2.FieldDescriptorProto.Type.items()
}


def compiled() -> descriptor_pb2.FileDescriptorSet:
    """The shop's protos, compiled with their comments."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "set.pb"
        protogen.protoc("--include_source_info", f"--descriptor_set_out={out}")
        return descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())


def render(files: Sequence[descriptor_pb2.FileDescriptorProto]) -> str:
    """The reference as markdown."""
    lines = [
        "# API reference (`shop.v1`)",
        "",
        "Generated from the comments in `protos/shop/v1/*.proto` by `python -m common.apidoc`",
        "(`make proto`); do not edit. Errors and their statuses: [Writing](writing.md#errors); error",
        "details decode with `third_party/googleapis/google/rpc/*.proto`.",
        "",
    ]
    for file in files:
        comments = _comments(file)
        for i, service in enumerate(file.service):
            lines += [f"## service `{file.package}.{service.name}`", ""]
            # The file's opening comment (above `syntax`) says what its service is for.
            lines += _text(comments, (_SYNTAX,)) + _text(comments, (_SERVICE, i))
            lines += ["| RPC | request | reply | what it does |", "| --- | --- | --- | --- |"]
            for j, method in enumerate(service.method):
                doc = " ".join(comments.get((_SERVICE, i, _METHOD, j), []))
                lines.append(
                    f"| `{method.name}` | {_ref(method.input_type, method.client_streaming)} "
                    f"| {_ref(method.output_type, method.server_streaming)} | {_cell(doc)} |"
                )
            lines.append("")
    for file in files:
        comments = _comments(file)
        lines += [f"## `{file.name}`", ""]
        for i, message in enumerate(file.message_type):
            lines += _message(message, (_MESSAGE, i), file.package, comments)
        for i, enum in enumerate(file.enum_type):
            lines += _enum(enum, (_ENUM, i), file.package, comments)
    return "\n".join(lines).rstrip() + "\n"


def _message(
    message: descriptor_pb2.DescriptorProto,
    path: tuple[int, ...],
    scope: str,
    comments: dict[tuple[int, ...], list[str]],
) -> list[str]:
    name = f"{scope}.{message.name}"
    lines = [f'### <a id="{_anchor(name)}"></a>message `{name}`', ""]
    lines += _text(comments, path)
    if message.field:
        lines += ["| field | # | type | notes |", "| --- | ---: | --- | --- |"]
        for j, field in enumerate(message.field):
            doc = " ".join(comments.get((*path, _FIELD, j), []))
            lines.append(f"| `{field.name}` | {field.number} | {_type(field)} | {_cell(doc)} |")
        lines.append("")
    for k, nested in enumerate(message.nested_type):
        if not nested.options.map_entry:
            lines += _message(nested, (*path, _NESTED, k), name, comments)
    for k, enum in enumerate(message.enum_type):
        lines += _enum(enum, (*path, _NESTED_ENUM, k), name, comments)
    return lines


def _enum(
    enum: descriptor_pb2.EnumDescriptorProto,
    path: tuple[int, ...],
    scope: str,
    comments: dict[tuple[int, ...], list[str]],
) -> list[str]:
    name = f"{scope}.{enum.name}"
    lines = [f'### <a id="{_anchor(name)}"></a>enum `{name}`', ""]
    lines += _text(comments, path)
    lines += ["| value | # | notes |", "| --- | ---: | --- |"]
    for j, value in enumerate(enum.value):
        doc = " ".join(comments.get((*path, _VALUE, j), []))
        lines.append(f"| `{value.name}` | {value.number} | {_cell(doc)} |")
    return [*lines, ""]


def _comments(file: descriptor_pb2.FileDescriptorProto) -> dict[tuple[int, ...], list[str]]:
    """Each element's comment lines (leading, else trailing), by SourceCodeInfo path."""
    found: dict[tuple[int, ...], list[str]] = {}
    for location in file.source_code_info.location:
        text = location.leading_comments or location.trailing_comments
        if text.strip():
            found[tuple(location.path)] = [line.strip() for line in text.strip().splitlines()]
    return found


def _text(comments: dict[tuple[int, ...], list[str]], path: tuple[int, ...]) -> list[str]:
    lines = comments.get(path)
    return [*lines, ""] if lines else []


def _type(field: descriptor_pb2.FieldDescriptorProto) -> str:
    kind = _ref(field.type_name) if field.type_name else f"`{_TYPES[field.type]}`"
    if field.label == descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED:
        return f"repeated {kind}"
    return f"optional {kind}" if field.proto3_optional else kind


def _ref(type_name: str, streaming: bool = False) -> str:
    name = type_name.lstrip(".")
    shown = f"[`{name}`](#{_anchor(name)})" if name.startswith("shop.") else f"`{name}`"
    return f"stream {shown}" if streaming else shown


def _anchor(name: str) -> str:
    return name.lower().replace(".", "-")


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _shop_files(
    found: descriptor_pb2.FileDescriptorSet,
) -> Iterator[descriptor_pb2.FileDescriptorProto]:
    return (f for f in found.file if f.name.startswith("shop/"))


def is_stale() -> bool:
    """True when ``docs/API.md`` differs from what the protos give now."""
    fresh = render(list(_shop_files(compiled())))
    return not OUT.exists() or OUT.read_text() != fresh


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/API.md is stale")
    args = parser.parse_args()
    if args.check:
        stale = is_stale()
        print("docs/API.md is stale: run `make proto`" if stale else "docs/API.md is fresh")
        return 1 if stale else 0
    OUT.write_text(render(list(_shop_files(compiled()))))
    print(OUT.relative_to(ROOT))
    return 0


if __name__ == "__main__":
    sys.exit(main())
