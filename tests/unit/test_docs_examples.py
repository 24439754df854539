"""Every `grpcurl` call shown in the README and the docs names an RPC that exists, and its
`-d` body is a valid request of that RPC (field names, types, enum values), so an example
cannot go stale when a proto changes. Shell variables in a body (`$ORDER`, `'$S'`) stand for
values of the right type; ids shortened with "…" in transcripts are strings all the same."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from google.protobuf import json_format
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.message_factory import GetMessageClass

from common.pb.shop.v1 import command_service_pb2, query_service_pb2

ROOT = Path(__file__).resolve().parents[2]
FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
METHODS: dict[str, MethodDescriptor] = {
    f"{service.full_name}/{method.name}": method
    for module in (command_service_pb2, query_service_pb2)
    for service in module.DESCRIPTOR.services_by_name.values()
    for method in service.methods
}
# What a shell variable in a body stands for (anything else: a string).
SAMPLES = {"S": "SOURCE_PROJECTION", "SOURCE": "SOURCE_READ_MODEL"}
_CALL = re.compile(r"grpcurl\b(?P<args>.*?)\s(?P<method>shop\.v1\.\w+/\w+)", re.DOTALL)


def calls() -> list[tuple[str, str, str | None]]:
    """(where, method, body) of every grpcurl call in a code block."""
    found = []
    for path in FILES:
        blocks = re.findall(r"^```[a-z]*\n(.*?)^```", path.read_text(), re.DOTALL | re.MULTILINE)
        for block in blocks:
            text = block.replace("\\\n", " ")
            for match in _CALL.finditer(text):
                if "grpcurl" in match.group("args"):
                    continue  # two calls on one line: the later one is found on its own
                args = shlex.split(re.sub(r"\$\(.*?\)", "x", match.group("args")))
                body = args[args.index("-d") + 1] if "-d" in args else None
                where = f"{path.name}: {match.group('method')}"
                found.append((where, match.group("method"), body))
    return found


def test_there_are_examples_to_check() -> None:
    assert len(calls()) >= 15


@pytest.mark.parametrize(("where", "method", "body"), calls(), ids=lambda v: str(v)[:60])
def test_each_shown_call_is_a_valid_request(where: str, method: str, body: str | None) -> None:
    assert method in METHODS, f"{where}: no such RPC"
    if body is None or body == "@":
        return
    text = re.sub(
        r"\$\{?(\w+)\}?", lambda m: SAMPLES.get(m.group(1), f"{m.group(1).lower()}-value"), body
    )
    request = GetMessageClass(METHODS[method].input_type)()
    json_format.Parse(text, request)  # raises on an unknown field, a wrong type or enum value
