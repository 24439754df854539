"""The vendored googleapis protos (third_party/googleapis) compile, and every message they
declare is on the wire what the installed googleapis-common-protos says it is (the servers
encode their error details with that package): same fields, numbers, types and labels. The
licence is beside them."""

from __future__ import annotations

import tempfile
from pathlib import Path

import grpc_tools
from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import Descriptor
from google.rpc import error_details_pb2, status_pb2
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parents[2]
VENDORED = ROOT / "third_party" / "googleapis"
INSTALLED = {"status.proto": status_pb2, "error_details.proto": error_details_pb2}


def _fields(message: descriptor_pb2.DescriptorProto) -> list[tuple[str, int, int, int]]:
    """Its fields' wire shape, and its nested messages' (``BadRequest.FieldViolation``)."""
    own = [(f"{message.name}.{f.name}", f.number, f.type, f.label) for f in message.field]
    return own + [f for nested in message.nested_type for f in _fields(nested)]


def _installed_fields(message: Descriptor) -> list[tuple[str, int, int, int]]:
    proto = descriptor_pb2.DescriptorProto()
    message.CopyToProto(proto)
    return _fields(proto)


def test_the_vendored_protos_match_the_installed_package_on_the_wire() -> None:
    include = str(Path(grpc_tools.__file__).parent / "_proto")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "set.pb"
        files = [f"google/rpc/{name}" for name in INSTALLED]
        code = protoc.main(
            ["protoc", f"-I{VENDORED}", f"-I{include}", f"--descriptor_set_out={out}", *files]
        )
        assert code == 0, "the vendored protos do not compile"
        compiled = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    for file in compiled.file:
        module = INSTALLED[Path(file.name).name]
        assert file.message_type, file.name
        for message in file.message_type:
            installed = module.DESCRIPTOR.message_types_by_name[message.name]
            assert _fields(message) == _installed_fields(installed), message.name
    assert "Apache License" in (VENDORED / "LICENSE").read_text()
