"""``payments:process``: charges confirmed orders and refunds cancelled ones.

A consumer of the event log like the projections (its own checkpoint row, commit-safe
order, a lease with hot standby), reading only ``PaymentRequested`` and
``RefundRequested``. For each: look up the order's payment state in the write model (an
already settled request is skipped, so a replay or a late start costs no provider call),
call the payment port through the API gateway, and report the outcome back as the
internal command ``RecordPaymentResult`` over gRPC to the write server, which records
``PaymentCaptured`` / ``PaymentFailed`` / ``PaymentRefunded``. The orders of a batch are
settled ``concurrency`` at a time (``CQRS_PAYMENTS_CONCURRENCY``; the gateway bounds the
calls per provider host too); one order's requests go strictly one after the other, in log
order (a refund after its charge). The checkpoint moves only once every order of the batch
is settled or skipped; when one fails, the others still finish (what they settled is
skipped when the batch is retried) and the batch fails with the first failure in log
order. No HTTP call happens inside a database transaction.

Safe to crash anywhere: the provider call carries an idempotency key derived from the
order and the attempt (``charge:<order>:<attempt>``, ``refund:<order>:<charge>``), so
a charge repeated after a crash returns the first charge; the command carries a
``request_id`` derived from the same key, so the result is recorded once.

Failures: a decline (402) or a rejected request is definitive: ``PaymentFailed``
(``retryable`` false) at once. A provider that cannot answer now (timeouts, 5xx, 429,
the breaker open) and a write server that cannot be reached are outages
(:class:`PaymentsUnavailable`, a ``ConnectionError``): the runner backs off and retries
the batch from its checkpoint, the orders stay PENDING meanwhile, and the other
consumers are not affected. So is a write server refusing the projector's credential
(UNAUTHENTICATED, PERMISSION_DENIED): a configuration fault, never a poison event. It is never rebuilt (``rebuildable = False``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import asyncpg
import grpc

from common import events as ev
from common.events import StoredEvent
from common.gateway import Gateway
from common.payments import PaymentDeclined, PaymentProvider, PaymentRejected, PaymentUnavailable
from common.pb.shop.v1 import command_service_pb2 as cpb
from common.pb.shop.v1 import command_service_pb2_grpc as cpb_grpc
from projector.errors import CheckpointMoved, PoisonEvent
from projector.outbound import Outbound
from projector.outbox import Batch

log = logging.getLogger(__name__)

NAME = "payments:process"
_EVENT_TYPES = (ev.PAYMENT_REQUESTED, ev.REFUND_REQUESTED)
_ORDER = "SELECT payment_status, payment_charge_id FROM orders WHERE id = $1::uuid"
# gRPC codes that mean "the write server cannot answer now": retry the batch later.
_RETRY_CODES = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.ABORTED}
)
# gRPC codes that mean "the write server does not take the projector's credential": a
# configuration fault to fix, retried like an outage meanwhile.
_REFUSED_CODES = frozenset({grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED})
_CALL_TIMEOUT_S = 10.0


class PaymentsUnavailable(ConnectionError):
    """The provider or the write server cannot answer now (an outage to the runner)."""


class WriteSide:
    """``RecordPaymentResult`` on the write server (a channel made on first use)."""

    def __init__(
        self, address: str, credentials: grpc.ChannelCredentials | None, metadata: Any
    ) -> None:
        self._address = address
        self._credentials = credentials
        self._metadata = tuple(metadata)
        self._channel: grpc.aio.Channel | None = None

    async def record(self, request: cpb.RecordPaymentResultRequest) -> None:
        if self._channel is None:
            self._channel = (
                grpc.aio.insecure_channel(self._address)
                if self._credentials is None
                else grpc.aio.secure_channel(self._address, self._credentials)
            )
        stub = cpb_grpc.CommandServiceStub(self._channel)
        try:
            await stub.RecordPaymentResult(
                request, timeout=_CALL_TIMEOUT_S, metadata=self._metadata
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() in _RETRY_CODES:
                raise PaymentsUnavailable(
                    f"write server: {exc.code().name}: {exc.details()}"
                ) from exc
            if exc.code() in _REFUSED_CODES:
                # Our credential, not the event: retried (with back-off) until the projector
                # is given one the write server takes, never a poison event.
                raise PaymentsUnavailable(
                    f"write server refuses the projector ({exc.code().name}: {exc.details()}); "
                    "give it CQRS_CLIENT_TOKEN, the write token of a subject in "
                    "CQRS_INTERNAL_SUBJECTS"
                ) from exc
            raise

    async def aclose(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None


class PaymentsProcess(Outbound):
    """The consumer; ``provider`` is the payment port, ``write`` the write side."""

    not_rebuilt_because = "a rebuild would charge and refund again"
    not_rewound_because = (
        "every request up to its checkpoint is settled and, read again, is skipped (the "
        "order's payment state) or answered from its idempotency key: a rewind would change "
        "nothing, only call the provider again"
    )

    def __init__(
        self,
        pool: asyncpg.Pool,
        provider: PaymentProvider,
        write: WriteSide,
        gateway: Gateway | None = None,
        concurrency: int = 32,
    ) -> None:
        if concurrency < 1:
            raise ValueError("payments_concurrency must be at least 1")
        self._pool = pool
        self._provider = provider
        self._write = write
        self._gateway = gateway  # the provider's, closed with it
        self._concurrency = concurrency

    @property
    def name(self) -> str:
        return NAME

    @property
    def consumes(self) -> tuple[str, ...]:
        return (ev.ORDER,)

    @property
    def event_types(self) -> tuple[str, ...]:
        return _EVENT_TYPES

    async def apply(self, batch: Batch) -> None:
        # Fail early if another runner moved the checkpoint (nothing is charged then).
        stored = await self.checkpoint()
        if stored != batch.start:
            raise CheckpointMoved(batch.start, stored)
        await self._settle(batch.events)
        await self._advance(self._pool, batch)

    async def _settle(self, events: Sequence[StoredEvent]) -> None:
        """Every order of ``events``, ``concurrency`` at a time, each order's events one
        after the other in log order; waits for all of them, then raises the first failure
        (in log order), if any."""
        by_order: dict[str, list[StoredEvent]] = {}
        for event in events:
            by_order.setdefault(event.aggregate_id, []).append(event)
        slots = asyncio.Semaphore(self._concurrency)

        async def settle(mine: list[StoredEvent]) -> None:
            async with slots:
                for event in mine:
                    await self._handle(event)

        outcomes = await asyncio.gather(
            *(settle(mine) for mine in by_order.values()), return_exceptions=True
        )
        for outcome in outcomes:  # the orders in the order of their first event
            if isinstance(outcome, BaseException):
                raise outcome

    async def _handle(self, event: StoredEvent) -> None:
        row = await self._pool.fetchrow(_ORDER, event.aggregate_id)
        if row is None:
            return  # the order is not in the write model any more: nothing to settle
        p = event.payload
        try:
            if event.event_type == ev.PAYMENT_REQUESTED:
                if row["payment_status"] != "PENDING":
                    return  # settled already (a replay, or recorded before a crash)
                await self._charge(event, p)
            elif row["payment_status"] == "CAPTURED":  # RefundRequested, not refunded yet
                await self._refund(event, p)
        except (KeyError, TypeError, ValueError) as exc:
            raise PoisonEvent(event, f"unreadable payment request: {exc!r}") from exc

    async def _charge(self, event: StoredEvent, p: Mapping[str, Any]) -> None:
        order_id = event.aggregate_id
        key = f"charge:{order_id}:{int(p['attempt'])}"
        amount, currency = int(p["amount_cents"]), str(p["currency"])
        result = cpb.RecordPaymentResultRequest(order_id=order_id, request_id=f"result:{key}")
        try:
            charge = await self._provider.charge(order_id, amount, currency, key)
        except (PaymentDeclined, PaymentRejected) as exc:
            log.info("%s: order %s: payment failed: %s", NAME, order_id, exc.reason)
            result.outcome = cpb.PAYMENT_OUTCOME_FAILED
            result.reason, result.retryable = exc.reason, False
        except PaymentUnavailable as exc:
            raise PaymentsUnavailable(f"payment provider: {exc.reason}") from exc
        else:
            result.outcome = cpb.PAYMENT_OUTCOME_CAPTURED
            result.provider_charge_id = charge.id
            result.amount_cents, result.currency = charge.amount_cents, charge.currency.upper()
        await self._write.record(result)

    async def _refund(self, event: StoredEvent, p: Mapping[str, Any]) -> None:
        order_id, charge_id = event.aggregate_id, str(p["provider_charge_id"])
        key = f"refund:{order_id}:{charge_id}"
        try:
            refund = await self._provider.refund(charge_id, int(p["amount_cents"]), key)
        except PaymentUnavailable as exc:
            raise PaymentsUnavailable(f"payment provider: {exc.reason}") from exc
        except (PaymentDeclined, PaymentRejected) as exc:
            # A refund the provider refuses needs a person: stop here, visibly.
            raise PoisonEvent(event, f"refund refused by the provider: {exc.reason}") from exc
        await self._write.record(
            cpb.RecordPaymentResultRequest(
                order_id=order_id,
                outcome=cpb.PAYMENT_OUTCOME_REFUNDED,
                provider_refund_id=refund.id,
                amount_cents=refund.amount_cents,
                request_id=f"result:{key}",
            )
        )

    async def describe(self) -> str:
        await self.checkpoint()
        row = await self._pool.fetchrow(
            "SELECT count(*) FILTER (WHERE payment_status = 'PENDING') AS pending,"
            " count(*) FILTER (WHERE payment_status = 'CAPTURED') AS captured,"
            " count(*) FILTER (WHERE payment_status = 'FAILED') AS failed,"
            " count(*) FILTER (WHERE payment_status = 'REFUNDED') AS refunded"
            " FROM orders WHERE deleted_at IS NULL"
        )
        assert row is not None
        return (
            f"orders: {row['pending']} pending, {row['captured']} captured, "
            f"{row['failed']} failed, {row['refunded']} refunded"
        )

    async def aclose(self) -> None:
        await self._write.aclose()
        await self._provider.aclose()
        if self._gateway is not None:
            await self._gateway.aclose()
