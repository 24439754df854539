"""shop.v1.CommandService: translates requests into commands and replies; nothing else."""

from __future__ import annotations

from typing import Any

import grpc

from common.errors import PermissionDenied
from common.events import CUSTOMER_FIELDS, PRODUCT_FIELDS
from common.pb.shop.v1 import command_service_pb2 as pb
from common.rpc.auth import current_subject
from write_server.domain import commands
from write_server.domain.order import CAPTURE, FAIL, REFUND
from write_server.service_layer.service import CommandResult, CommandService, RequestMeta


def _changes(request: Any, fields: tuple[str, ...]) -> dict[str, Any]:
    """The proto3 ``optional`` fields that are present: absent means unchanged."""
    return {f: getattr(request, f) for f in fields if request.HasField(f)}


def request_meta(context: grpc.aio.ServicerContext) -> RequestMeta:
    metadata = dict(context.invocation_metadata() or ())
    return RequestMeta(
        peer=context.peer() or "",
        user_agent=str(metadata.get("user-agent", "")),
        auth_subject=current_subject(context),
    )


def _reply(result: CommandResult) -> pb.CommandReply:
    return pb.CommandReply(
        id=result.id, version=result.version, consistency_token=result.consistency_token
    )


_OUTCOMES = {
    pb.PAYMENT_OUTCOME_CAPTURED: CAPTURE,
    pb.PAYMENT_OUTCOME_FAILED: FAIL,
    pb.PAYMENT_OUTCOME_REFUNDED: REFUND,
}


def _secret_reply(result: CommandResult) -> pb.WebhookSecretReply:
    return pb.WebhookSecretReply(
        id=result.id,
        version=result.version,
        consistency_token=result.consistency_token,
        secret=result.secret,
    )


class CommandServicer:
    """One ``async def`` per RPC, named like it: request -> command -> reply.

    ``authenticates``: the server checks who calls (write tokens or a client CA). Then an
    empty subject (e.g. a client certificate without a common name) is nobody: it may not
    report payments nor be shown a webhook secret. A fully open server has no subjects at
    all, and every caller may call everything.
    """

    def __init__(
        self,
        service: CommandService,
        internal_subjects: frozenset[str] = frozenset(),
        *,
        authenticates: bool = False,
    ):
        self._service = service
        self._internal = internal_subjects
        self._authenticates = authenticates

    def _identified(self, context: grpc.aio.ServicerContext, what: str) -> str:
        """The caller's subject; PERMISSION_DENIED for an empty one on a server that
        authenticates (an open server's callers are all "" and all admitted)."""
        subject = current_subject(context)
        if self._authenticates and not subject:
            raise PermissionDenied(
                f"{what} needs an identified caller: this call has no subject "
                "(a client certificate without a common name?)"
            )
        return subject

    async def _run(
        self, command: commands.Command, context: grpc.aio.ServicerContext
    ) -> pb.CommandReply:
        return _reply(await self._service.execute(command, request_meta(context)))

    async def CreateProduct(
        self, request: pb.CreateProductRequest, context: grpc.aio.ServicerContext
    ) -> pb.CommandReply:
        command = commands.CreateProduct(
            request_id=request.request_id, **{f: getattr(request, f) for f in PRODUCT_FIELDS}
        )
        return await self._run(command, context)

    async def UpdateProduct(
        self, request: pb.UpdateProductRequest, context: grpc.aio.ServicerContext
    ) -> pb.CommandReply:
        command = commands.UpdateProduct(
            id=request.id,
            changes=_changes(request, PRODUCT_FIELDS),
            expected_version=request.expected_version,
            request_id=request.request_id,
        )
        return await self._run(command, context)

    async def DeleteProduct(
        self, request: pb.DeleteProductRequest, context: grpc.aio.ServicerContext
    ) -> pb.CommandReply:
        command = commands.DeleteProduct(
            id=request.id, expected_version=request.expected_version, request_id=request.request_id
        )
        return await self._run(command, context)

    async def CreateCustomer(
        self, request: pb.CreateCustomerRequest, context: grpc.aio.ServicerContext
    ) -> pb.CommandReply:
        command = commands.CreateCustomer(
            request_id=request.request_id, **{f: getattr(request, f) for f in CUSTOMER_FIELDS}
        )
        return await self._run(command, context)

    async def UpdateCustomer(
        self, request: pb.UpdateCustomerRequest, context: grpc.aio.ServicerContext
    ) -> pb.CommandReply:
        command = commands.UpdateCustomer(
            id=request.id,
            changes=_changes(request, CUSTOMER_FIELDS),
            expected_version=request.expected_version,
            request_id=request.request_id,
        )
        return await self._run(command, context)

    async def DeleteCustomer(
        self, request: pb.DeleteCustomerRequest, context: grpc.aio.ServicerContext
    ) -> pb.CommandReply:
        command = commands.DeleteCustomer(
            id=request.id, expected_version=request.expected_version, request_id=request.request_id
        )
        return await self._run(command, context)

    async def PlaceOrder(
        self, request: pb.PlaceOrderRequest, context: grpc.aio.ServicerContext
    ) -> pb.CommandReply:
        command = commands.PlaceOrder(
            customer_id=request.customer_id,
            items=tuple(commands.OrderItemRequest(i.product_id, i.quantity) for i in request.items),
            request_id=request.request_id,
        )
        return await self._run(command, context)

    async def _status(
        self, request: Any, action: str, context: grpc.aio.ServicerContext
    ) -> pb.CommandReply:
        command = commands.ChangeOrderStatus(
            id=request.id,
            action=action,
            expected_version=request.expected_version,
            request_id=request.request_id,
        )
        return await self._run(command, context)

    async def ConfirmOrder(
        self, request: pb.ConfirmOrderRequest, context: grpc.aio.ServicerContext
    ) -> pb.CommandReply:
        return await self._status(request, "confirm", context)

    async def ShipOrder(
        self, request: pb.ShipOrderRequest, context: grpc.aio.ServicerContext
    ) -> pb.CommandReply:
        return await self._status(request, "ship", context)

    async def DeliverOrder(
        self, request: pb.DeliverOrderRequest, context: grpc.aio.ServicerContext
    ) -> pb.CommandReply:
        return await self._status(request, "deliver", context)

    async def CancelOrder(
        self, request: pb.CancelOrderRequest, context: grpc.aio.ServicerContext
    ) -> pb.CommandReply:
        return await self._status(request, "cancel", context)

    async def CreateWebhookSubscription(
        self, request: pb.CreateWebhookSubscriptionRequest, context: grpc.aio.ServicerContext
    ) -> pb.WebhookSecretReply:
        # A secret's retry is scoped by subject: "nobody" would share one scope with all.
        self._identified(context, "CreateWebhookSubscription")
        command = commands.CreateWebhookSubscription(
            url=request.url,
            event_types=tuple(request.event_types),
            description=request.description,
            request_id=request.request_id,
        )
        return _secret_reply(await self._service.execute(command, request_meta(context)))

    async def DisableWebhookSubscription(
        self, request: pb.DisableWebhookSubscriptionRequest, context: grpc.aio.ServicerContext
    ) -> pb.CommandReply:
        command = commands.DisableWebhookSubscription(
            id=request.id, expected_version=request.expected_version, request_id=request.request_id
        )
        return await self._run(command, context)

    async def RotateWebhookSecret(
        self, request: pb.RotateWebhookSecretRequest, context: grpc.aio.ServicerContext
    ) -> pb.WebhookSecretReply:
        self._identified(context, "RotateWebhookSecret")
        command = commands.RotateWebhookSecret(
            id=request.id, expected_version=request.expected_version, request_id=request.request_id
        )
        return _secret_reply(await self._service.execute(command, request_meta(context)))

    async def RecordPaymentResult(
        self, request: pb.RecordPaymentResultRequest, context: grpc.aio.ServicerContext
    ) -> pb.CommandReply:
        subject = self._identified(context, "RecordPaymentResult")
        # Open servers have no subjects; with tokens (or mutual TLS) only internal callers.
        if self._authenticates and subject not in self._internal:
            raise PermissionDenied(
                f"RecordPaymentResult is internal: subject {subject!r} is not in "
                "CQRS_INTERNAL_SUBJECTS"
            )
        command = commands.RecordPaymentResult(
            order_id=request.order_id,
            outcome=_OUTCOMES.get(request.outcome, ""),
            provider_charge_id=request.provider_charge_id,
            provider_refund_id=request.provider_refund_id,
            amount_cents=request.amount_cents,
            currency=request.currency,
            reason=request.reason,
            retryable=request.retryable,
            request_id=request.request_id,
        )
        return await self._run(command, context)

    async def DeleteOrder(
        self, request: pb.DeleteOrderRequest, context: grpc.aio.ServicerContext
    ) -> pb.CommandReply:
        command = commands.DeleteOrder(
            id=request.id, expected_version=request.expected_version, request_id=request.request_id
        )
        return await self._run(command, context)
