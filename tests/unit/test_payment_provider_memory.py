"""The PaymentProvider contract against the in-memory provider, plus its knobs."""

from __future__ import annotations

import pytest

from common.gateway import Gateway
from common.payments import (
    HttpPaymentProvider,
    InMemoryPaymentProvider,
    PaymentDeclined,
    PaymentProvider,
    PaymentUnavailable,
    make_provider,
)
from tests.contract.payment_provider import DECLINED_AMOUNT, Knobs, PaymentProviderContract


class MemoryKnobs:
    def __init__(self, provider: InMemoryPaymentProvider) -> None:
        self.provider = provider

    async def go_down(self) -> None:
        self.provider.fail_next(1000, "down for the test")

    async def come_back(self) -> None:
        self.provider.fail_next(0)

    async def charge_ids(self, order_id: str) -> list[str]:
        return [c.id for c in self.provider.charges_for(order_id)]


def declining(order_id: str, amount_cents: int) -> str | None:
    return "card_declined: Your card was declined." if amount_cents == DECLINED_AMOUNT else None


class TestInMemoryProvider(PaymentProviderContract):
    @pytest.fixture
    def memory(self) -> InMemoryPaymentProvider:
        return InMemoryPaymentProvider(declines=declining)

    @pytest.fixture
    def provider(self, memory: InMemoryPaymentProvider) -> PaymentProvider:
        return memory

    @pytest.fixture
    def knobs(self, memory: InMemoryPaymentProvider) -> Knobs:
        return MemoryKnobs(memory)


async def test_decline_next_declines_new_charges_only() -> None:
    provider = InMemoryPaymentProvider()
    provider.decline_next(1, "insufficient_funds: Your card has insufficient funds.")
    with pytest.raises(PaymentDeclined) as raised:
        await provider.charge("o1", 100, "EUR", "k1")
    assert raised.value.reason == "insufficient_funds: Your card has insufficient funds."
    charge = await provider.charge("o1", 100, "EUR", "k2")
    with pytest.raises(PaymentDeclined):  # the replay of k1 is declined, and uses no knob
        await provider.charge("o1", 100, "EUR", "k1")
    provider.decline_next(2)
    assert await provider.charge("o1", 100, "EUR", "k2") == charge  # a replay: not declined
    for k in ("k3", "k4"):
        with pytest.raises(PaymentDeclined):
            await provider.charge("o1", 100, "EUR", k)
    assert await provider.charge("o1", 100, "EUR", "k5") != charge
    assert len(provider.charges_for("o1")) == 2


async def test_fail_next_changes_nothing_and_carries_retry_in() -> None:
    provider = InMemoryPaymentProvider()
    provider.fail_next(2, "maintenance", retry_in_s=3.0)
    for _ in range(2):
        with pytest.raises(PaymentUnavailable) as raised:
            await provider.charge("o1", 100, "EUR", "k1")
        assert raised.value.retryable and raised.value.retry_in_s == 3.0
        assert raised.value.reason == "maintenance"
    charge = await provider.charge("o1", 100, "EUR", "k1")
    assert provider.charges_for("o1") == [charge]
    refund = await provider.refund(charge.id, 40, "r1")
    assert provider.refunds_for(charge.id) == [refund]
    await provider.aclose()
    assert provider.closed


def test_make_provider_picks_by_url() -> None:
    gateway = Gateway()
    http = make_provider("http://127.0.0.1:8095/", gateway)
    assert isinstance(http, HttpPaymentProvider)
    assert http.base_url == "http://127.0.0.1:8095"
    assert isinstance(make_provider("memory:", gateway), InMemoryPaymentProvider)
    assert isinstance(make_provider("memory://", gateway), InMemoryPaymentProvider)
    with pytest.raises(ValueError):
        make_provider("ftp://example.com", gateway)
