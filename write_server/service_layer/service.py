"""The write side's service: runs a command in one unit of work, idempotently."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from common.positions import encode_token
from write_server.domain import commands
from write_server.domain.errors import (
    ConcurrencyConflict,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
)
from write_server.domain.webhook import WebhookSubscription
from write_server.service_layer.handlers import HANDLERS, Context, Handler
from write_server.service_layer.ports import Deferred, StoredReply, UnitOfWork
from write_server.uuid7 import uuid7

MAX_REQUEST_ID = 128
# A command deferred by a group-committing unit of work leads its next batch, so it is not
# deferred for the same reason twice; a few more tries cover batches that failed around it.
MAX_ATTEMPTS = 5
# The key of a stored reply that revealed a webhook secret: the secret's digest.
SECRET_DIGEST = "secret_sha256"


@dataclass(frozen=True, slots=True)
class CommandResult:
    id: str
    version: int
    consistency_token: str
    secret: str = ""  # a webhook secret made by this command (its reply only)


@dataclass(frozen=True, slots=True)
class RequestMeta:
    """Who asked: stored with every event as its metadata."""

    peer: str = ""
    user_agent: str = ""
    auth_subject: str = ""

    def as_metadata(self, request_id: str) -> dict[str, str]:
        values = {
            "request_id": request_id,
            "peer": self.peer,
            "user_agent": self.user_agent,
            "auth_subject": self.auth_subject,
        }
        return {k: v for k, v in values.items() if v}


def utc_now() -> datetime:
    return datetime.now(UTC)


def new_uuid() -> str:
    return str(uuid7())


class CommandService:
    """Executes commands: one unit of work each, all-or-nothing.

    A command with a ``request_id`` is idempotent per caller (the authenticated subject;
    "" on an open server): the first reply is stored in the same transaction as its
    effects; a retry by the same subject with the same id and the same arguments gets that
    reply and changes nothing; the same id with different arguments is rejected
    (INVALID_ARGUMENT). Another subject's use of the id is a new command. A reply that
    revealed a webhook secret is stored without it; its retry reads the secret from the
    subscription while it is still that one (FAILED_PRECONDITION after a rotation).
    """

    def __init__(
        self,
        uow_factory: Callable[[], UnitOfWork],
        clock: Callable[[], datetime] = utc_now,
        new_id: Callable[[], str] = new_uuid,
        *,
        allow_private_webhooks: bool = False,
        payments: bool = False,
    ) -> None:
        self._uow_factory = uow_factory
        self._clock = clock
        self._new_id = new_id
        self._allow_private_webhooks = allow_private_webhooks
        self._payments = payments

    async def execute(
        self, command: commands.Command, meta: RequestMeta | None = None
    ) -> CommandResult:
        meta = meta or RequestMeta()
        handler = HANDLERS[type(command)]
        if len(command.request_id) > MAX_REQUEST_ID:
            raise InvalidArgument(
                FieldViolation("request_id", f"must be at most {MAX_REQUEST_ID} characters")
            )
        for attempt in range(MAX_ATTEMPTS):
            uow = self._uow_factory()
            uow.retried = attempt > 0
            try:
                return await self._run(command, meta, handler, uow)
            except Deferred:
                continue
        raise ConcurrencyConflict("the command kept giving way to others; retry it")

    async def _run(
        self, command: commands.Command, meta: RequestMeta, handler: Handler, uow: UnitOfWork
    ) -> CommandResult:
        """One attempt at ``command`` in ``uow`` (``Deferred``: the caller runs it again)."""
        request_id = command.request_id
        # Idempotency is per caller: another subject's "retry" is a new command.
        subject = meta.auth_subject
        async with uow:
            if request_id:
                # Serializes retries of one request, so exactly one of them executes.
                await uow.lock([request_lock_key(subject, request_id)])
                stored = await uow.requests.get(subject, request_id)
                if stored is not None:
                    return await _replay(stored, command, uow)
            ctx = Context(self._clock(), self._new_id, self._allow_private_webhooks, self._payments)
            aggregate = await handler(command, uow, ctx)
            position = await uow.flush(meta.as_metadata(request_id))
            result = CommandResult(
                id=aggregate.id,
                version=aggregate.version,
                consistency_token=encode_token(position) if position else "",
                secret=(
                    aggregate.take_revealed_secret()
                    if isinstance(aggregate, WebhookSubscription)
                    else ""
                ),
            )
            if request_id:
                await uow.requests.add(
                    subject,
                    request_id,
                    StoredReply(type(command).__name__, command.fingerprint(), _stored(result)),
                )
            await uow.commit()
            return result


def request_lock_key(subject: str, request_id: str) -> str:
    """The lock serializing one caller's retries (length-prefixed: no two pairs collide)."""
    return f"request:{len(subject)}:{subject}:{request_id}"


def secret_digest(secret: str) -> str:
    """What a stored reply keeps of the secret it revealed: SHA-256 of 32 random bytes
    cannot be inverted, but tells whether the subscription still has that secret."""
    return hashlib.sha256(secret.encode()).hexdigest()


def _stored(result: CommandResult) -> dict[str, Any]:
    """The reply as stored: never the secret itself (command_requests is no place for it:
    roles that do not sign deliveries may read it), only its digest."""
    reply: dict[str, Any] = {
        "id": result.id,
        "version": result.version,
        "consistency_token": result.consistency_token,
    }
    if result.secret:
        reply[SECRET_DIGEST] = secret_digest(result.secret)
    return reply


async def _replay(stored: StoredReply, command: commands.Command, uow: UnitOfWork) -> CommandResult:
    if stored.command != type(command).__name__ or stored.fingerprint != command.fingerprint():
        raise InvalidArgument(
            FieldViolation(
                "request_id", "was already used for a different command or different arguments"
            )
        )
    ident = str(stored.reply["id"])
    digest = stored.reply.get(SECRET_DIGEST)
    return CommandResult(
        id=ident,
        version=int(stored.reply["version"]),
        consistency_token=str(stored.reply["consistency_token"]),
        secret=await _secret_again(uow, ident, str(digest)) if digest else "",
    )


async def _secret_again(uow: UnitOfWork, ident: str, digest: str) -> str:
    """The secret a replayed reply revealed, read from the subscription (the one place it
    is kept), while it is still that secret; FAILED_PRECONDITION once a rotation replaced
    it (a retry must not reveal a secret its first reply did not)."""
    found = (await uow.webhooks.get_many([ident])).get(ident)
    if found is None or not hmac.compare_digest(secret_digest(found.secret), digest):
        raise FailedPrecondition(
            f"webhook subscription {ident}: the secret was replaced by a later rotation; "
            "it is not shown again"
        )
    return found.secret
