"""The committed generated protobuf code must match the .proto files."""

from common.protogen import is_stale


def test_generated_code_is_fresh() -> None:
    assert not is_stale(), "protos changed: run `make proto` and commit common/pb"
