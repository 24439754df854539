"""An in-memory payment provider for unit tests, with knobs to decline and to fail."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from common.payments._model import Charge, PaymentDeclined, PaymentUnavailable, Refund
from common.payments._rules import (
    DEFAULT_DECLINE,
    check_amount,
    check_currency,
    idempotency_conflict,
    new_id,
    refund_too_large,
    unknown_charge,
)

# Says, for a new charge (order_id, amount_cents), the decline reason, or None to accept.
Declines = Callable[[str, int], str | None]


@dataclass(frozen=True, slots=True)
class _Stored:
    """What an idempotency key was first used for, and what it produced."""

    fingerprint: tuple[object, ...]
    outcome: Charge | Refund | PaymentDeclined


class InMemoryPaymentProvider:
    """A :class:`~common.payments.PaymentProvider` keeping everything in dicts.

    It raises what the HTTP adapter raises for the same situation (same error classes,
    reasons and ``status``): a key reused with other arguments, an unknown charge or a refund
    beyond the charged amount is PaymentRejected; a decline is remembered under its key, so a
    replay is declined again. Knobs: ``declines`` (a function of order and amount) and
    :meth:`decline_next` decline new charges; :meth:`fail_next` makes the next calls raise
    PaymentUnavailable before anything changes, as an unreachable provider would.
    """

    def __init__(self, *, declines: Declines | None = None) -> None:
        self.charges: dict[str, Charge] = {}
        self.refunds: dict[str, Refund] = {}
        self._keys: dict[str, _Stored] = {}
        self._declines = declines
        self._decline_next: list[str] = []
        self._fail_next: list[PaymentUnavailable] = []
        self.closed = False

    # -- knobs --------------------------------------------------------------------------

    def decline_next(self, n: int = 1, reason: str = DEFAULT_DECLINE) -> None:
        """Decline the next ``n`` new charges (replays do not count) with ``reason``;
        replaces what an earlier call asked (``n=0``: no more)."""
        self._decline_next = [reason] * n

    def fail_next(
        self, n: int = 1, reason: str = "provider unavailable", retry_in_s: float | None = None
    ) -> None:
        """Make the next ``n`` calls (charges or refunds) raise PaymentUnavailable, before
        anything changes; replaces what an earlier call asked (``n=0``: available again)."""
        self._fail_next = [PaymentUnavailable(reason, retry_in_s) for _ in range(n)]

    # -- views for tests ----------------------------------------------------------------

    def charges_for(self, order_id: str) -> list[Charge]:
        """The charges made for an order, oldest first."""
        return [c for c in self.charges.values() if c.order_id == order_id]

    def refunds_for(self, charge_id: str) -> list[Refund]:
        """The refunds of a charge, oldest first."""
        return [r for r in self.refunds.values() if r.charge_id == charge_id]

    # -- the port -----------------------------------------------------------------------

    async def charge(
        self, order_id: str, amount_cents: int, currency: str, idempotency_key: str
    ) -> Charge:
        """Charge an order (see the PaymentProvider protocol)."""
        self._maybe_fail()
        check_amount(amount_cents)
        code = check_currency(currency)
        fingerprint = ("charge", order_id, amount_cents, code)
        replayed = self._replay(idempotency_key, fingerprint)
        if replayed is not None:
            assert isinstance(replayed, Charge)
            return replayed
        reason = self._decline_reason(order_id, amount_cents)
        if reason is not None:
            declined = PaymentDeclined(reason)
            self._keys[idempotency_key] = _Stored(fingerprint, declined)
            raise declined
        made = Charge(new_id("ch_"), order_id, amount_cents, code)
        self.charges[made.id] = made
        self._keys[idempotency_key] = _Stored(fingerprint, made)
        return made

    async def refund(self, charge_id: str, amount_cents: int, idempotency_key: str) -> Refund:
        """Refund part of a charge (see the PaymentProvider protocol)."""
        self._maybe_fail()
        check_amount(amount_cents)
        fingerprint = ("refund", charge_id, amount_cents)
        replayed = self._replay(idempotency_key, fingerprint)
        if replayed is not None:
            assert isinstance(replayed, Refund)
            return replayed
        charged = self.charges.get(charge_id)
        if charged is None:
            raise unknown_charge(charge_id)
        left = charged.amount_cents - sum(r.amount_cents for r in self.refunds_for(charge_id))
        if amount_cents > left:
            raise refund_too_large(amount_cents, left)
        made = Refund(new_id("re_"), charge_id, amount_cents)
        self.refunds[made.id] = made
        self._keys[idempotency_key] = _Stored(fingerprint, made)
        return made

    async def aclose(self) -> None:
        """Nothing to release; later calls still work (state is kept for assertions)."""
        self.closed = True

    # -- internals ----------------------------------------------------------------------

    def _maybe_fail(self) -> None:
        if self._fail_next:
            raise self._fail_next.pop(0)

    def _replay(self, key: str, fingerprint: tuple[object, ...]) -> Charge | Refund | None:
        """The stored result of ``key`` (raising a stored decline), None for a new key."""
        stored = self._keys.get(key)
        if stored is None:
            return None
        if stored.fingerprint != fingerprint:
            raise idempotency_conflict(key)
        if isinstance(stored.outcome, PaymentDeclined):
            raise PaymentDeclined(stored.outcome.reason)
        return stored.outcome

    def _decline_reason(self, order_id: str, amount_cents: int) -> str | None:
        if self._decline_next:
            return self._decline_next.pop(0)
        return self._declines(order_id, amount_cents) if self._declines is not None else None
