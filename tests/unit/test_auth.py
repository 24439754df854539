"""Token settings, lookup and the guard's answers, without a server."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from common import errors
from common.rpc import auth
from common.settings import Settings


class FakeContext:
    """The two things a guard reads of a grpc.aio.ServicerContext."""

    def __init__(self, metadata: tuple[tuple[str, str], ...] = ()) -> None:
        self._metadata = metadata

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata

    def auth_context(self) -> dict[str, list[bytes]]:
        return {"x509_common_name": [b"cert-cn"]}


def test_pairs_parse_from_commas_and_lines_with_comments() -> None:
    text = "ci:aaa, alice : bbb\n# ops\nbob:c:c\n"
    assert auth.parse_pairs(text, "X") == {"aaa": "ci", "bbb": "alice", "c:c": "bob"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("ci", "entry 1 is not 'subject:token'"),
        ("ci:aaa,:bbb", "entry 2 is not 'subject:token'"),
        ("ci:", "entry 1 is not 'subject:token'"),
        ("ci:s3cret-x,bob:s3cret-x", "'bob' and 'ci' share a token"),
    ],
)
def test_bad_pairs_are_refused_without_showing_a_token(text: str, message: str) -> None:
    with pytest.raises(auth.TokenError) as raised:
        auth.parse_pairs(text, "CQRS_WRITE_TOKENS")
    assert message in str(raised.value)
    assert "s3cret" not in str(raised.value) and "aaa" not in str(raised.value)


def test_tokens_come_from_settings_and_files(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text("ops:from-file\n")
    settings = Settings(write_tokens="ci:inline", read_tokens_file=str(path))
    tokens = auth.load_tokens(settings)
    assert tokens is not None
    assert tokens.find("inline") == auth.Credential("ci", True)
    assert tokens.find("from-file") == auth.Credential("ops", False)
    assert tokens.find("inlin") is None and tokens.find("inlinee") is None
    assert auth.load_tokens(Settings()) is None
    missing = replace(settings, read_tokens_file=str(tmp_path / "nope"))
    with pytest.raises(auth.TokenError, match="CQRS_READ_TOKENS_FILE"):
        auth.load_tokens(missing)


def test_write_guard_answers() -> None:
    settings = Settings(write_tokens="ci:w1", read_tokens="dash:r1")
    guard = auth.guard_for(settings, "write")
    assert guard is not None

    def admit(*metadata: tuple[str, str]) -> None:
        assert guard is not None
        guard.admit(FakeContext(metadata))  # type: ignore[arg-type]

    with pytest.raises(errors.Unauthenticated, match="missing"):
        admit()
    with pytest.raises(errors.Unauthenticated, match="not 'Bearer"):
        admit(("authorization", "Basic w1"))
    with pytest.raises(errors.Unauthenticated, match="unknown"):
        admit(("authorization", "Bearer w2"))
    with pytest.raises(errors.PermissionDenied, match="'dash' holds a read-only token"):
        admit(("authorization", "Bearer r1"))
    admit(("authorization", "bearer w1"))


def test_which_servers_are_guarded() -> None:
    assert auth.guard_for(Settings(), "write") is None
    only_read = Settings(read_tokens="dash:r1")
    assert auth.guard_for(only_read, "write") is None  # writes stay open: no write tokens
    assert auth.guard_for(only_read, "read") is not None
    only_write = Settings(write_tokens="ci:w1")
    assert auth.guard_for(only_write, "read") is None


def test_public_services() -> None:
    assert auth.public_services(Settings()) == {auth.HEALTH, *auth.REFLECTION}
    assert auth.public_services(Settings(auth_public_services="none")) == set()
    assert auth.public_services(Settings(auth_public_services="health,x.Y")) == {
        auth.HEALTH,
        "x.Y",
    }


def test_tokens_stay_out_of_the_settings_repr() -> None:
    settings = Settings(
        write_tokens="ci:w-s3cret", read_tokens="d:r-s3cret", client_token="t-s3cret"
    )
    assert "s3cret" not in repr(settings)


def test_cqrs_up_gives_its_projector_a_credential_only_when_it_needs_one() -> None:
    on = Settings(write_tokens="ci:" + "a" * 32, payments_url="http://127.0.0.1:9")
    given = auth.with_internal_credential(on)
    subject, token = given.write_tokens.split(",")[1].split(":")
    assert subject == "projector" and token == given.client_token and len(token) >= 32
    assert given.write_tokens.startswith(on.write_tokens)
    assert auth.with_internal_credential(on).client_token != token  # drawn anew each time
    auth.require_internal_credential(given)
    for unchanged in (
        replace(on, payments_url=""),  # no payments: no internal call
        replace(on, write_tokens=""),  # no tokens: nothing to present
        replace(on, client_token="mine"),  # the operator's own
    ):
        assert auth.with_internal_credential(unchanged) == unchanged


def test_a_projector_without_the_credential_it_needs_is_a_start_up_error() -> None:
    missing = Settings(write_tokens_file="/run/tokens", payments_url="http://127.0.0.1:9")
    with pytest.raises(auth.TokenError, match="CQRS_CLIENT_TOKEN"):
        auth.require_internal_credential(missing)
    with pytest.raises(auth.TokenError, match="names nobody"):
        auth.with_internal_credential(replace(missing, write_tokens="ci:x", internal_subjects=" ,"))
