"""The PaymentProvider contract, run against every adapter.

:class:`PaymentProviderContract` holds the tests; each adapter's test module subclasses it
and provides the ``provider`` fixture and ``knobs`` (how to make that adapter decline a
charge, go down and come back, and how many charges it holds for an order): the in-memory
provider in tests/unit/test_payment_provider_memory.py, the HTTP provider against the
sandbox (in-process and as a ``cqrs payments-sandbox`` process) in
tests/integration/test_payment_provider_http.py.
"""

from __future__ import annotations

import uuid
from typing import Protocol

import pytest

from common.payments import (
    Charge,
    PaymentDeclined,
    PaymentProvider,
    PaymentRejected,
    PaymentUnavailable,
    Refund,
)

# The amount every adapter's knobs make decline (InMemory: a `declines` function; the
# sandbox: `decline_amounts`).
DECLINED_AMOUNT = 40_002


class Knobs(Protocol):
    """What the contract needs to steer an adapter from outside."""

    async def go_down(self) -> None:
        """From now on the provider cannot be reached (nothing changes there)."""

    async def come_back(self) -> None:
        """The provider answers again."""

    async def charge_ids(self, order_id: str) -> list[str]:
        """The ids of the charges the provider holds for ``order_id``."""


def order() -> str:
    return str(uuid.uuid4())


def key() -> str:
    return f"test-{uuid.uuid4()}"


class PaymentProviderContract:
    """Behaviour every PaymentProvider must have. Subclasses provide the fixtures."""

    @pytest.fixture
    def provider(self) -> PaymentProvider:
        raise NotImplementedError

    @pytest.fixture
    def knobs(self) -> Knobs:
        raise NotImplementedError

    async def test_charge_returns_a_charge(self, provider: PaymentProvider, knobs: Knobs) -> None:
        order_id = order()
        charge = await provider.charge(order_id, 1250, "eur", key())
        assert isinstance(charge, Charge)
        assert charge.id.startswith("ch_") and len(charge.id) == 27
        assert (charge.order_id, charge.amount_cents, charge.currency) == (order_id, 1250, "EUR")
        assert await knobs.charge_ids(order_id) == [charge.id]

    async def test_same_key_and_arguments_charge_once(
        self, provider: PaymentProvider, knobs: Knobs
    ) -> None:
        order_id, k = order(), key()
        first = await provider.charge(order_id, 999, "EUR", k)
        again = await provider.charge(order_id, 999, "EUR", k)
        assert again == first
        assert await knobs.charge_ids(order_id) == [first.id]

    async def test_other_keys_charge_again(self, provider: PaymentProvider, knobs: Knobs) -> None:
        order_id = order()
        first = await provider.charge(order_id, 500, "EUR", key())
        second = await provider.charge(order_id, 500, "EUR", key())
        assert first.id != second.id
        assert sorted(await knobs.charge_ids(order_id)) == sorted([first.id, second.id])

    async def test_same_key_with_other_arguments_is_rejected(
        self, provider: PaymentProvider, knobs: Knobs
    ) -> None:
        order_id, k = order(), key()
        first = await provider.charge(order_id, 700, "EUR", k)
        for other in ((order_id, 701, "EUR"), (order(), 700, "EUR"), (order_id, 700, "USD")):
            with pytest.raises(PaymentRejected) as raised:
                await provider.charge(*other, k)
            assert raised.value.retryable is False
            assert raised.value.status == 400
            assert raised.value.reason.startswith("idempotency_error")
        # A charge key is not a refund key either.
        with pytest.raises(PaymentRejected):
            await provider.refund(first.id, 100, k)
        assert await knobs.charge_ids(order_id) == [first.id]

    async def test_invalid_amounts_are_rejected(self, provider: PaymentProvider) -> None:
        for amount in (0, -5):
            with pytest.raises(PaymentRejected) as raised:
                await provider.charge(order(), amount, "EUR", key())
            assert raised.value.status == 400 and not raised.value.retryable

    async def test_a_decline_is_definitive_and_replayed(
        self, provider: PaymentProvider, knobs: Knobs
    ) -> None:
        order_id, k = order(), key()
        with pytest.raises(PaymentDeclined) as raised:
            await provider.charge(order_id, DECLINED_AMOUNT, "EUR", k)
        assert raised.value.retryable is False
        assert raised.value.reason.startswith("card_declined: ")
        # The same request is declined again (the key remembers it), and nothing was charged.
        with pytest.raises(PaymentDeclined):
            await provider.charge(order_id, DECLINED_AMOUNT, "EUR", k)
        assert await knobs.charge_ids(order_id) == []

    async def test_refund_and_its_replay(self, provider: PaymentProvider) -> None:
        charge = await provider.charge(order(), 3000, "EUR", key())
        k = key()
        refund = await provider.refund(charge.id, 1000, k)
        assert isinstance(refund, Refund)
        assert refund.id.startswith("re_")
        assert (refund.charge_id, refund.amount_cents) == (charge.id, 1000)
        assert await provider.refund(charge.id, 1000, k) == refund
        with pytest.raises(PaymentRejected) as raised:
            await provider.refund(charge.id, 1001, k)
        assert raised.value.reason.startswith("idempotency_error")

    async def test_refunds_never_exceed_the_charge(self, provider: PaymentProvider) -> None:
        charge = await provider.charge(order(), 3000, "EUR", key())
        with pytest.raises(PaymentRejected) as raised:
            await provider.refund(charge.id, 3001, key())
        assert raised.value.status == 400 and not raised.value.retryable
        await provider.refund(charge.id, 2000, key())
        with pytest.raises(PaymentRejected):
            await provider.refund(charge.id, 1001, key())
        last = await provider.refund(charge.id, 1000, key())  # exactly what is left
        assert last.amount_cents == 1000
        with pytest.raises(PaymentRejected):
            await provider.refund(charge.id, 1, key())

    async def test_refund_of_an_unknown_charge_is_rejected(self, provider: PaymentProvider) -> None:
        with pytest.raises(PaymentRejected) as raised:
            await provider.refund("ch_doesnotexist000000000000", 100, key())
        assert raised.value.status == 404
        assert raised.value.reason.startswith("resource_missing")
        assert not raised.value.retryable

    async def test_unavailable_is_retryable_and_a_retry_charges_once(
        self, provider: PaymentProvider, knobs: Knobs
    ) -> None:
        order_id, k = order(), key()
        charge = await provider.charge(order(), 800, "EUR", key())
        await knobs.go_down()
        try:
            with pytest.raises(PaymentUnavailable) as raised:
                await provider.charge(order_id, 800, "EUR", k)
            assert raised.value.retryable is True
            assert raised.value.reason
            with pytest.raises(PaymentUnavailable):
                await provider.refund(charge.id, 100, key())
        finally:
            await knobs.come_back()
        # The same key once the provider is back: one charge, as if the first never happened.
        made = await provider.charge(order_id, 800, "EUR", k)
        assert await provider.charge(order_id, 800, "EUR", k) == made
        assert await knobs.charge_ids(order_id) == [made.id]
