"""API tokens: who may call a server, and the subject recorded with what they write.

``CQRS_WRITE_TOKENS`` / ``CQRS_READ_TOKENS`` (or their ``*_FILE`` variants) hold
``subject:token`` pairs. A server built with a :class:`Guard` admits a call only with
``authorization: Bearer <token>`` metadata naming a token of the right kind: the write
server wants a write token once write tokens are set (a read token is PERMISSION_DENIED),
the read server a read or write token once read tokens are set. Without tokens nothing is
checked and the call path is the one without a guard (decided when the server is built).

Lookup is constant-time in the token's content: tokens are indexed by an HMAC under a
key drawn at start-up, so the dict lookup's timing depends only on digests an attacker
cannot relate to any token, and the one candidate found is confirmed with
``hmac.compare_digest``. Tokens appear in no log line or error message: errors name the
subject or the line, never the token.
"""

from __future__ import annotations

import contextvars
import dataclasses
import hashlib
import hmac
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import grpc

from common import errors
from common.settings import Settings

HEALTH = "grpc.health.v1.Health"
REFLECTION = ("grpc.reflection.v1alpha.ServerReflection", "grpc.reflection.v1.ServerReflection")

# The authenticated subject of the call being handled ("" when nothing authenticated it);
# each RPC runs in a task of its own, so a value never leaks into another call.
_SUBJECT: contextvars.ContextVar[str] = contextvars.ContextVar("cqrs_auth_subject", default="")


class TokenError(ValueError):
    """A token setting that cannot be used; the message never contains a token."""


@dataclass(frozen=True, slots=True)
class Credential:
    subject: str
    may_write: bool


class Tokens:
    """The known tokens, looked up without comparing the presented token to each."""

    def __init__(self, write: Mapping[str, str], read: Mapping[str, str]) -> None:
        """``write`` and ``read`` map token -> subject; a token in both is a write token."""
        self._key = secrets.token_bytes(32)
        self._by_digest: dict[bytes, tuple[str, Credential]] = {}
        for table, may_write in ((read, False), (write, True)):
            for token, subject in table.items():
                self._by_digest[self._digest(token)] = (token, Credential(subject, may_write))
        self.has_write = bool(write)
        self.has_read = bool(read)

    def _digest(self, token: str) -> bytes:
        return hmac.new(self._key, token.encode(), hashlib.sha256).digest()

    def find(self, token: str) -> Credential | None:
        found = self._by_digest.get(self._digest(token))
        if found is None or not hmac.compare_digest(found[0].encode(), token.encode()):
            return None
        return found[1]


def parse_pairs(text: str, source: str) -> dict[str, str]:
    """``subject:token`` pairs separated by commas or newlines -> {token: subject}."""
    pairs: dict[str, str] = {}
    items = [item.strip() for line in text.splitlines() for item in line.split(",")]
    for number, item in enumerate((i for i in items if i and not i.startswith("#")), 1):
        subject, sep, token = item.partition(":")
        subject, token = subject.strip(), token.strip()
        if not sep or not subject or not token:
            raise TokenError(f"{source}: entry {number} is not 'subject:token'")
        if any(c.isspace() for c in token):
            raise TokenError(f"{source}: the token of {subject!r} contains whitespace")
        if token in pairs:
            raise TokenError(f"{source}: {subject!r} and {pairs[token]!r} share a token")
        pairs[token] = subject
    return pairs


def load_tokens(settings: Settings) -> Tokens | None:
    """The tokens the settings name (inline and from files), or None when there are none."""
    tables = []
    for kind, inline, path in (
        ("write", settings.write_tokens, settings.write_tokens_file),
        ("read", settings.read_tokens, settings.read_tokens_file),
    ):
        table = parse_pairs(inline, f"CQRS_{kind.upper()}_TOKENS")
        if path:
            try:
                text = Path(path).read_text()
            except OSError as exc:
                raise TokenError(f"CQRS_{kind.upper()}_TOKENS_FILE: {exc.strerror}") from None
            for token, subject in parse_pairs(text, f"CQRS_{kind.upper()}_TOKENS_FILE").items():
                if token in table:
                    raise TokenError(f"{kind} tokens: {subject!r} is given twice")
                table[token] = subject
        tables.append(table)
    write, read = tables
    return Tokens(write, read) if write or read else None


class Guard:
    """Admits a call to a server that needs ``need`` ("write" or "read") access."""

    def __init__(self, tokens: Tokens, need: str) -> None:
        self._tokens = tokens
        self._need = need

    def admit(self, context: grpc.aio.ServicerContext) -> None:
        """Raise Unauthenticated/PermissionDenied, or record the caller's subject."""
        header = ""
        for key, value in context.invocation_metadata() or ():
            if key == "authorization":
                header = value if isinstance(value, str) else value.decode(errors="replace")
                break
        scheme, _, token = header.partition(" ")
        if not header:
            raise errors.Unauthenticated("missing 'authorization: Bearer <token>' metadata")
        if scheme.lower() != "bearer" or not token.strip():
            raise errors.Unauthenticated("the authorization metadata is not 'Bearer <token>'")
        credential = self._tokens.find(token.strip())
        if credential is None:
            raise errors.Unauthenticated("unknown API token")
        if self._need == "write" and not credential.may_write:
            raise errors.PermissionDenied(f"{credential.subject!r} holds a read-only token")
        _SUBJECT.set(credential.subject)


def guard_for(settings: Settings, need: str) -> Guard | None:
    """The guard of a server needing ``need`` access, or None when its calls are open:
    the write server is guarded once write tokens are set, the read server once read
    tokens are (then a read or a write token will do)."""
    tokens = load_tokens(settings)
    if tokens is None:
        return None
    if need == "write" and not tokens.has_write:
        return None
    if need == "read" and not tokens.has_read:
        return None
    return Guard(tokens, need)


def public_services(settings: Settings) -> frozenset[str]:
    """Services reachable without a token (``CQRS_AUTH_PUBLIC_SERVICES``: full service
    names, or the words ``health`` and ``reflection``; ``none``: every service needs one)."""
    names: set[str] = set()
    for word in (w.strip() for w in settings.auth_public_services.split(",")):
        if word == "health":
            names.add(HEALTH)
        elif word == "reflection":
            names.update(REFLECTION)
        elif word and word != "none":
            names.add(word)
    return frozenset(names)


def current_subject(context: grpc.aio.ServicerContext) -> str:
    """Who made the call being handled: the API token's subject, else the mutual-TLS
    client certificate's common name, else ""."""
    subject = _SUBJECT.get()
    if subject:
        return subject
    auth = context.auth_context() or {}
    return b",".join(auth.get("x509_common_name", [])).decode(errors="replace")


def write_tokens_on(settings: Settings) -> bool:
    """Whether the write server takes only calls with a write token."""
    return bool(settings.write_tokens or settings.write_tokens_file)


def read_tokens_on(settings: Settings) -> bool:
    """Whether the read server takes only calls with a read (or write) token."""
    return bool(settings.read_tokens or settings.read_tokens_file)


def internal_subject(settings: Settings) -> str:
    """The subject the projector calls the internal RPCs as (the first internal one)."""
    return next((s.strip() for s in settings.internal_subjects.split(",") if s.strip()), "")


def with_internal_credential(settings: Settings) -> Settings:
    """``settings`` giving the projector a credential of its own when it needs one: payments
    on, write tokens on and no ``CQRS_CLIENT_TOKEN`` set. A random token for the first
    internal subject is added to the write tokens and made the client token (what ``cqrs up``
    gives the processes it starts; shown nowhere). Otherwise ``settings`` unchanged."""
    if not (settings.payments_url and write_tokens_on(settings)) or settings.client_token:
        return settings
    subject = internal_subject(settings)
    if not subject:
        raise TokenError(
            "CQRS_INTERNAL_SUBJECTS names nobody: the projector cannot record payments"
        )
    token = secrets.token_urlsafe(32)
    pairs = (
        f"{settings.write_tokens},{subject}:{token}"
        if settings.write_tokens
        else f"{subject}:{token}"
    )
    return dataclasses.replace(settings, write_tokens=pairs, client_token=token)


def require_internal_credential(settings: Settings) -> None:
    """A projector charging payments against a write server that takes tokens must have
    one (``CQRS_CLIENT_TOKEN``): a configuration error at start-up, not a failed payment."""
    if settings.payments_url and write_tokens_on(settings) and not settings.client_token:
        raise TokenError(
            "payments are on (CQRS_PAYMENTS_URL) and the write server takes API tokens "
            "(CQRS_WRITE_TOKENS): give the projector CQRS_CLIENT_TOKEN, the write token of a "
            f"subject in CQRS_INTERNAL_SUBJECTS ({settings.internal_subjects})"
        )
