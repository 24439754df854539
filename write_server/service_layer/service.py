"""The write side's service: runs a command in one unit of work, idempotently."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from common.positions import encode_token
from write_server.domain import commands
from write_server.domain.errors import FieldViolation, InvalidArgument
from write_server.domain.webhook import WebhookSubscription
from write_server.service_layer.handlers import HANDLERS, Context
from write_server.service_layer.ports import StoredReply, UnitOfWork
from write_server.uuid7 import uuid7

MAX_REQUEST_ID = 128


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

    A command with a ``request_id`` is idempotent: the first reply is stored in
    the same transaction as its effects; a retry with the same id and the same
    arguments gets that reply and changes nothing; the same id with different
    arguments is rejected (INVALID_ARGUMENT).
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
        handler = HANDLERS[type(command)]
        request_id = command.request_id
        if len(request_id) > MAX_REQUEST_ID:
            raise InvalidArgument(
                FieldViolation("request_id", f"must be at most {MAX_REQUEST_ID} characters")
            )
        async with self._uow_factory() as uow:
            if request_id:
                # Serializes retries of one request, so exactly one of them executes.
                await uow.lock([f"request:{request_id}"])
                stored = await uow.requests.get(request_id)
                if stored is not None:
                    return _replay(stored, command)
            ctx = Context(self._clock(), self._new_id, self._allow_private_webhooks, self._payments)
            aggregate = await handler(command, uow, ctx)
            position = await uow.flush((meta or RequestMeta()).as_metadata(request_id))
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
                # A retry of a lost reply gets the same secret back, so it is stored with it
                # (in the write database, beside the subscription's own copy).
                reply = {
                    "id": result.id,
                    "version": result.version,
                    "consistency_token": result.consistency_token,
                    "secret": result.secret,
                }
                await uow.requests.add(
                    request_id, StoredReply(type(command).__name__, command.fingerprint(), reply)
                )
            await uow.commit()
            return result


def _replay(stored: StoredReply, command: commands.Command) -> CommandResult:
    if stored.command != type(command).__name__ or stored.fingerprint != command.fingerprint():
        raise InvalidArgument(
            FieldViolation(
                "request_id", "was already used for a different command or different arguments"
            )
        )
    return CommandResult(
        id=str(stored.reply["id"]),
        version=int(stored.reply["version"]),
        consistency_token=str(stored.reply["consistency_token"]),
        secret=str(stored.reply.get("secret", "")),
    )
