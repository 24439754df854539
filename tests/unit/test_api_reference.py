"""docs/API.md is what the protos' comments give now, and it names every RPC of both
services (so a new RPC cannot go undocumented)."""

from __future__ import annotations

from common import apidoc
from common.pb.shop.v1 import command_service_pb2, query_service_pb2


def test_the_api_reference_is_fresh() -> None:
    assert not apidoc.is_stale(), "protos changed: run `make proto` and commit docs/API.md"


def test_every_rpc_is_in_the_reference_with_a_description() -> None:
    text = apidoc.OUT.read_text()
    for module, service in (
        (command_service_pb2, "CommandService"),
        (query_service_pb2, "QueryService"),
    ):
        for method in module.DESCRIPTOR.services_by_name[service].methods:
            row = next(
                line for line in text.splitlines() if line.startswith(f"| `{method.name}` |")
            )
            assert not row.endswith("|  |"), f"{service}.{method.name} has no comment in its proto"
