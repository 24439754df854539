"""The PaymentProvider contract against HttpPaymentProvider and a real payments sandbox (in
this process through ``serve``, and as a ``cqrs payments-sandbox`` process), plus what only
the HTTP adapter does: the gateway's retries, its breaker, the sandbox's state file and views.
No mocks, no database."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from common.gateway import Gateway
from common.payments import (
    HttpPaymentProvider,
    PaymentDeclined,
    PaymentProvider,
    PaymentRejected,
    PaymentUnavailable,
)
from cqrs.instances import free_port
from sandbox import Behaviour, serve
from tests.contract.payment_provider import DECLINED_AMOUNT, Knobs, PaymentProviderContract
from tests.support.gateways import quick_gateway
from tests.support.http_receiver import Receiver
from tests.support.servers import ROOT

# Quick retries: the tests are about what is retried, not about the back-off's length.


class SandboxClient:
    """A sandbox's URL, its control endpoint and its views (plain httpx: test tooling)."""

    def __init__(self, url: str) -> None:
        self.url = url

    async def request(self, method: str, path: str, body: Any = None) -> httpx.Response:
        async with httpx.AsyncClient(base_url=self.url, timeout=5.0) as client:
            content = None if body is None else json.dumps(body).encode()
            return await client.request(method, path, content=content)

    async def get(self, path: str) -> Any:
        response = await self.request("GET", path)
        assert response.status_code == 200, response.text
        return response.json()

    async def behave(self, **changes: Any) -> dict[str, Any]:
        response = await self.request("POST", "/_sandbox/behaviour", changes)
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result

    async def stats(self) -> dict[str, int]:
        result: dict[str, int] = await self.get("/_sandbox/stats")
        return result

    # Knobs of the contract
    async def go_down(self) -> None:
        await self.behave(down=True)

    async def come_back(self) -> None:
        await self.behave(down=False)

    async def charge_ids(self, order_id: str) -> list[str]:
        listed = await self.get(f"/v1/charges?order_id={order_id}")
        assert listed["object"] == "list"
        return [c["id"] for c in listed["data"]]


@asynccontextmanager
async def in_process(
    behaviour: Behaviour | None = None, state_path: Path | None = None
) -> AsyncIterator[SandboxClient]:
    """A sandbox served on this loop, on a free port."""
    port: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        serve("127.0.0.1", 0, behaviour or Behaviour(), state_path, ready=port.set_result)
    )
    try:
        started: set[asyncio.Future[Any]] = {port, task}
        done, _ = await asyncio.wait(started, timeout=5, return_when="FIRST_COMPLETED")
        if task in done:
            task.result()  # it could not start: say why
        yield SandboxClient(f"http://127.0.0.1:{await port}")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@contextmanager
def cli_process(*flags: str, log: Path) -> Iterator[tuple[SandboxClient, subprocess.Popen[bytes]]]:
    """``python -m cqrs payments-sandbox`` on a free port; SIGTERM at the end must exit 0."""
    port = free_port()
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "cqrs", "payments-sandbox", "--port", str(port), *flags],
            cwd=ROOT,
            stdout=out,
            stderr=out,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the sandbox did not answer /healthz"
            time.sleep(0.05)
        yield SandboxClient(url), process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    assert process.returncode == 0, log.read_text()
    assert f"payments sandbox listening on {url}" in log.read_text()


def a_gateway(**overrides: Any) -> AbstractAsyncContextManager[Gateway]:
    return quick_gateway("payments-test", **overrides)


@pytest.fixture
async def gateway() -> AsyncIterator[Gateway]:
    # Two attempts and a breaker that does not open within one contract test.
    async with a_gateway(retry_attempts=2, breaker_threshold=20) as gw:
        yield gw


@pytest.fixture
async def sandbox() -> AsyncIterator[SandboxClient]:
    async with in_process(Behaviour(decline_amounts=[DECLINED_AMOUNT])) as sb:
        yield sb


def key() -> str:
    return f"test-{uuid.uuid4()}"


def order() -> str:
    return str(uuid.uuid4())


async def wait_stats(sb: SandboxClient, name: str, value: int, within_s: float = 5.0) -> None:
    deadline = time.monotonic() + within_s
    while (await sb.stats())[name] != value:
        assert time.monotonic() < deadline, f"{name} != {value}: {await sb.stats()}"
        await asyncio.sleep(0.05)


# -- the contract ------------------------------------------------------------------------------


class TestHttpProviderInProcessSandbox(PaymentProviderContract):
    @pytest.fixture
    def provider(self, sandbox: SandboxClient, gateway: Gateway) -> PaymentProvider:
        return HttpPaymentProvider(sandbox.url, gateway, timeout_s=2.0)

    @pytest.fixture
    def knobs(self, sandbox: SandboxClient) -> Knobs:
        return sandbox


@pytest.fixture(scope="module")
def cli_sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxClient]:
    log = tmp_path_factory.mktemp("payments-sandbox") / "sandbox.log"
    with cli_process("--decline-amounts", str(DECLINED_AMOUNT), "--seed", "1", log=log) as (
        client,
        _,
    ):
        yield client


class TestHttpProviderCliSandbox(PaymentProviderContract):
    """The same contract against the real CLI process (one for the class; every test uses
    its own orders and keys)."""

    @pytest.fixture
    def provider(self, cli_sandbox: SandboxClient, gateway: Gateway) -> PaymentProvider:
        return HttpPaymentProvider(cli_sandbox.url, gateway, timeout_s=2.0)

    @pytest.fixture
    async def knobs(self, cli_sandbox: SandboxClient) -> AsyncIterator[Knobs]:
        yield cli_sandbox
        await cli_sandbox.come_back()  # whatever the test did


# -- retries of the gateway ----------------------------------------------------------------------


async def test_a_timed_out_charge_retried_by_the_gateway_charges_once(
    sandbox: SandboxClient,
) -> None:
    await sandbox.behave(latency_ms=1000)
    async with a_gateway(retry_attempts=3) as gw:
        provider = HttpPaymentProvider(sandbox.url, gw, timeout_s=0.3)
        order_id = order()
        charging = asyncio.create_task(provider.charge(order_id, 4200, "EUR", key()))
        await asyncio.sleep(0.1)
        # The first attempt sleeps on at the sandbox; the retry after its timeout finds none.
        await sandbox.behave(latency_ms=0)
        charge = await charging
    # The first attempt is done at the sandbox later: it finds the key and replays.
    await wait_stats(sandbox, "idempotent_replays", 1)
    stats = await sandbox.stats()
    assert (stats["requests"], stats["charges"]) == (2, 1)
    assert await sandbox.charge_ids(order_id) == [charge.id]


async def test_500s_are_retried_then_one_charge(sandbox: SandboxClient) -> None:
    await sandbox.behave(errors_next=2)
    async with a_gateway(retry_attempts=3) as gw:
        provider = HttpPaymentProvider(sandbox.url, gw)
        order_id = order()
        charge = await provider.charge(order_id, 1500, "EUR", key())
    stats = await sandbox.stats()
    assert (stats["requests"], stats["errors"], stats["charges"]) == (3, 2, 1)
    assert await sandbox.charge_ids(order_id) == [charge.id]


async def test_a_random_error_rate_is_retried_through(sandbox: SandboxClient) -> None:
    await sandbox.behave(error_rate=0.5, seed=11)
    async with a_gateway(retry_attempts=12, breaker_threshold=50) as gw:
        provider = HttpPaymentProvider(sandbox.url, gw)
        for _ in range(5):
            await provider.charge(order(), 100, "EUR", key())
    stats = await sandbox.stats()
    assert stats["charges"] == 5
    assert stats["errors"] > 0
    assert stats["requests"] == 5 + stats["errors"]


async def test_429_is_retried_after_retry_after(sandbox: SandboxClient) -> None:
    await sandbox.behave(throttles_next=1)
    async with a_gateway(retry_attempts=3) as gw:
        provider = HttpPaymentProvider(sandbox.url, gw)
        started = time.monotonic()
        await provider.charge(order(), 100, "EUR", key())
        assert time.monotonic() - started >= 0.9  # Retry-After: 1
    stats = await sandbox.stats()
    assert (stats["throttled"], stats["charges"], stats["requests"]) == (1, 1, 2)


async def test_a_retry_after_too_long_to_wait_is_unavailable_with_retry_in(
    sandbox: SandboxClient,
) -> None:
    await sandbox.behave(throttle_rate=1.0)
    async with a_gateway(retry_attempts=3, retry_after_max_s=0.5) as gw:
        provider = HttpPaymentProvider(sandbox.url, gw)
        with pytest.raises(PaymentUnavailable) as raised:
            await provider.charge(order(), 100, "EUR", key())
    assert raised.value.retryable and raised.value.retry_in_s == 1.0
    assert "retry after" in raised.value.reason
    assert (await sandbox.stats())["charges"] == 0


async def test_down_opens_the_breaker_which_closes_once_back(sandbox: SandboxClient) -> None:
    await sandbox.behave(down=True)
    async with a_gateway(retry_attempts=2, breaker_threshold=2, breaker_ttl_s=1.0) as gw:
        provider = HttpPaymentProvider(sandbox.url, gw)
        order_id, k = order(), key()
        with pytest.raises(PaymentUnavailable) as raised:
            await provider.charge(order_id, 100, "EUR", k)
        assert "failed 2 attempt(s)" in raised.value.reason
        assert gw.breaker_state(sandbox.url) == "open"
        with pytest.raises(PaymentUnavailable) as raised:
            await provider.charge(order_id, 100, "EUR", k)
        assert "circuit open" in raised.value.reason
        assert raised.value.retry_in_s is not None and 0 < raised.value.retry_in_s <= 1.0
        await sandbox.behave(down=False)
        with pytest.raises(PaymentUnavailable):  # still open: nothing is sent before the ttl
            await provider.charge(order_id, 100, "EUR", k)
        await asyncio.sleep(1.1)
        charge = await provider.charge(order_id, 100, "EUR", k)
        assert gw.breaker_state(sandbox.url) == "closed"
    stats = await sandbox.stats()
    # Two attempts reached the dead sandbox; the breaker kept the rest away.
    assert (stats["dropped"], stats["requests"], stats["charges"]) == (2, 3, 1)
    assert await sandbox.charge_ids(order_id) == [charge.id]


# -- the sandbox itself ------------------------------------------------------------------------


async def test_the_state_file_survives_a_restart_of_the_cli(tmp_path: Path) -> None:
    state, log = tmp_path / "state.json", tmp_path / "sandbox.log"
    order_id, k = order(), key()
    async with a_gateway() as gw:
        with cli_process("--state", str(state), log=log) as (sb, _):
            provider = HttpPaymentProvider(sb.url, gw)
            charge = await provider.charge(order_id, 2500, "EUR", k)
            refund = await provider.refund(charge.id, 500, "refund-1")
        assert json.loads(state.read_text())["charges"][charge.id]["amount_refunded"] == 500
        with cli_process("--state", str(state), log=log) as (sb, _):
            provider = HttpPaymentProvider(sb.url, gw)
            assert await provider.charge(order_id, 2500, "EUR", k) == charge
            assert await provider.refund(charge.id, 500, "refund-1") == refund
            with pytest.raises(PaymentRejected):  # the key still knows its parameters
                await provider.charge(order_id, 2501, "EUR", k)
            with pytest.raises(PaymentRejected):  # and the refunds still count
                await provider.refund(charge.id, 2001, key())
            assert (await sb.get(f"/v1/charges/{charge.id}"))["amount_refunded"] == 500
            stats = await sb.stats()
            assert (stats["charges"], stats["refunds"], stats["idempotent_replays"]) == (1, 1, 2)


async def test_sigterm_with_a_reply_in_flight_logs_no_error(tmp_path: Path) -> None:
    """A charge the sandbox is still answering (latency) when SIGTERM comes: the connection
    is dropped, the process exits 0, and nothing is logged as an ERROR (it used to log
    asyncio's CancelledError traceback)."""
    log = tmp_path / "sandbox.log"
    with cli_process("--latency-ms", "5000", log=log) as (sb, process):
        charging = asyncio.create_task(
            asyncio.to_thread(
                httpx.post,
                f"{sb.url}/v1/charges",
                data={"amount": "100", "currency": "eur"},
                timeout=10,
            )
        )
        deadline = time.monotonic() + 5
        while (await sb.stats())["requests"] < 1:
            assert time.monotonic() < deadline, "the charge never arrived"
            await asyncio.sleep(0.02)
        process.send_signal(signal.SIGTERM)
        await asyncio.to_thread(process.wait, 10)
        with pytest.raises(httpx.TransportError):
            await charging
    text = log.read_text()
    assert '"level": "ERROR"' not in text and "Traceback" not in text, text
    assert "payments sandbox stopped" in text


async def test_read_only_views(sandbox: SandboxClient, gateway: Gateway) -> None:
    provider = HttpPaymentProvider(sandbox.url, gateway)
    order_id = order()
    first = await provider.charge(order_id, 1000, "EUR", key())
    second = await provider.charge(order_id, 2000, "EUR", key())
    refund = await provider.refund(first.id, 300, key())

    shown = await sandbox.get(f"/v1/charges/{first.id}")
    assert shown["object"] == "charge" and shown["amount"] == 1000
    assert shown["currency"] == "eur" and shown["metadata"] == {"order_id": order_id}
    assert (shown["amount_refunded"], shown["refunded"]) == (300, False)
    listed = await sandbox.get(f"/v1/charges?order_id={order_id}")
    assert [c["id"] for c in listed["data"]] == [second.id, first.id]  # newest first
    assert len((await sandbox.get("/v1/charges"))["data"]) == 2
    assert (await sandbox.get(f"/v1/charges?order_id={order()}"))["data"] == []
    refunds = await sandbox.get(f"/v1/refunds?charge={first.id}")
    assert [r["id"] for r in refunds["data"]] == [refund.id]
    assert (await sandbox.get(f"/v1/refunds/{refund.id}"))["amount"] == 300
    missing = await sandbox.request("GET", "/v1/charges/ch_nope")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "resource_missing"
    assert (await sandbox.request("GET", "/nowhere")).status_code == 404

    assert await sandbox.get("/healthz") == {"status": "ok", "down": False}
    stats = await sandbox.stats()
    assert {k: stats[k] for k in ("requests", "charges", "refunds", "declines")} == {
        "requests": 3 + 7,  # three calls of the provider, seven views above
        "charges": 2,
        "refunds": 1,
        "declines": 0,
    }
    assert stats["idempotent_replays"] == 0


async def test_the_control_endpoint_checks_what_it_is_given(sandbox: SandboxClient) -> None:
    before = await sandbox.get("/_sandbox/behaviour")
    assert before["decline_amounts"] == [DECLINED_AMOUNT] and before["down"] is False
    for bad in ({"error_rate": 2}, {"nope": 1}, {"down": "yes"}, {"latency_ms": 5, "seed": -1}):
        response = await sandbox.request("POST", "/_sandbox/behaviour", bad)
        assert response.status_code == 400, bad
    assert await sandbox.get("/_sandbox/behaviour") == before  # all or nothing
    after = await sandbox.behave(decline_rate=1.0, latency_ms=5)
    assert (after["decline_rate"], after["latency_ms"]) == (1.0, 5.0)


async def test_without_idempotency_key_nothing_is_deduplicated(sandbox: SandboxClient) -> None:
    body = {"amount": 100, "currency": "eur", "metadata": {"order_id": "o-1"}}
    first = await sandbox.request("POST", "/v1/charges", body)
    second = await sandbox.request("POST", "/v1/charges", body)
    assert first.status_code == second.status_code == 200
    assert first.json()["id"] != second.json()["id"]
    assert len(await sandbox.charge_ids("o-1")) == 2


async def test_a_random_decline_rate_counts_declines(sandbox: SandboxClient) -> None:
    await sandbox.behave(decline_rate=1.0)
    async with a_gateway() as gw:
        provider = HttpPaymentProvider(sandbox.url, gw)
        with pytest.raises(PaymentDeclined) as raised:
            await provider.charge(order(), 100, "EUR", key())
    assert raised.value.reason == "card_declined: Your card was declined."
    assert (await sandbox.stats())["declines"] == 1


# -- answers no sandbox gives --------------------------------------------------------------------


async def test_wire_format_and_odd_answers() -> None:
    async with Receiver() as receiver, a_gateway(retry_attempts=1) as gw:
        provider = HttpPaymentProvider(receiver.url("/"), gw)
        receiver.status(200, b"<html>maintenance</html>")
        with pytest.raises(PaymentUnavailable) as unavailable:
            await provider.charge("o-1", 1234, "EUR", "k-1")
        assert "unexpected answer" in unavailable.value.reason
        sent = receiver.requests[0]
        assert (sent.method, sent.path) == ("POST", "/v1/charges")
        assert sent.headers["idempotency-key"] == "k-1"
        assert sent.headers["content-type"] == "application/json"
        assert sent.json() == {"amount": 1234, "currency": "eur", "metadata": {"order_id": "o-1"}}

        receiver.status(200, b'{"id": "re_1", "object": "refund", "status": "pending"}')
        with pytest.raises(PaymentUnavailable):
            await provider.refund("ch_1", 5, "k-2")
        assert receiver.requests[1].json() == {"charge": "ch_1", "amount": 5}

        receiver.status(402, b"no")
        with pytest.raises(PaymentDeclined) as declined:
            await provider.charge("o-1", 1234, "EUR", "k-3")
        assert declined.value.reason.startswith("http_402")

        conflict = b'{"error": {"type": "idempotency_error", "message": "in use"}}'
        receiver.status(409, conflict)
        with pytest.raises(PaymentRejected) as rejected:
            await provider.charge("o-1", 1234, "EUR", "k-4")
        assert (rejected.value.status, rejected.value.reason) == (409, "idempotency_error: in use")

        receiver.status(302, headers={"Location": "https://elsewhere.example/"})
        with pytest.raises(PaymentRejected) as redirected:
            await provider.charge("o-1", 1234, "EUR", "k-5")
        assert redirected.value.status == 302
