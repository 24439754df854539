"""What a receiver cannot make the gateway hold: memory (a huge or endless answer), time
(an answer dripped a byte at a time) and the shared pool (slow receivers taking every
connection). Real hostile receivers on 127.0.0.1, no mocks.

Memory is measured on the receiver's side: the bytes it managed to push before the
gateway dropped the connection (a client that stops reading stops the sender once the
socket buffers, a few MB, are full), and the size of the response the gateway returns.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest
from prometheus_client import REGISTRY

from common.gateway import TRUNCATED, Gateway, RateLimited, RetriesExhausted
from tests.support.gateways import quick_gateway
from tests.support.hostile_http import HostileServer, drip, huge_body
from tests.support.http_receiver import Receiver

MIB = 1024 * 1024
# What loopback socket buffers can hold between a sender and a client that stopped reading.
BUFFERS = 24 * MIB


def gateway(**overrides: Any) -> AbstractAsyncContextManager[Gateway]:
    return quick_gateway(**overrides)


async def test_a_huge_answer_is_read_up_to_the_default_bound_then_dropped() -> None:
    async with HostileServer(huge_body(128 * MIB)) as server, gateway() as gw:
        async with asyncio.timeout(20):
            response = await gw.request("POST", server.url("/hook"))
        (conn,) = await server.wait_closed(1, timeout_s=5)
    assert response.status_code == 200
    assert len(response.content) <= 64 * 1024  # GatewayConfig's default: 64 KiB
    assert conn.sent < BUFFERS, f"the receiver pushed {conn.sent / MIB:.0f} MiB into us"


async def test_an_endless_answer_is_cut_at_max_response_bytes() -> None:
    async with HostileServer(huge_body(None)) as server:
        async with gateway(max_response_bytes=4096) as gw, asyncio.timeout(10):
            first = await gw.request("POST", server.url("/a"))
            second = await gw.request("POST", server.url("/b"))
        closed = await server.wait_closed(2, timeout_s=5)
    for response in (first, second):
        assert response.status_code == 200
        assert len(response.content) == 4096 and response.extensions[TRUNCATED] is True
        assert (
            "content-length" not in response.headers or response.headers["content-length"] == "4096"
        )
    # Each answer's connection was dropped, not returned to the pool with a body unread.
    assert len(server.connections) == 2
    assert all(c.sent < BUFFERS for c in closed)


async def test_a_small_answer_is_whole_and_not_marked_truncated() -> None:
    async with Receiver() as r, gateway(max_response_bytes=4096) as gw:
        r.status(400, b'{"error": "bad"}')
        response = await gw.request("POST", r.url("/x"))
        again = await gw.request("POST", r.url("/x"))
    assert response.json() == {"error": "bad"} and response.extensions[TRUNCATED] is False
    assert again.status_code == 400
    assert {q.connection for q in r.requests} == {1}  # a fully read answer keeps its connection


@pytest.mark.parametrize("in_head", [False, True], ids=["body", "head"])
async def test_a_dripping_answer_is_cut_at_the_attempt_timeout(in_head: bool) -> None:
    # A byte every 0.1 s: far inside any per-read timeout, for 8 s; the whole attempt may
    # take 1 s.
    async with HostileServer(drip(0.1, in_head=in_head, total=80)) as server:
        async with gateway(retry_attempts=1) as gw:
            started = time.monotonic()
            with pytest.raises(RetriesExhausted) as caught:
                async with asyncio.timeout(30):
                    await gw.request("POST", server.url("/drip"), timeout_s=1.0)
            took = time.monotonic() - started
        (conn,) = await server.wait_closed(1, timeout_s=5)
    assert 0.9 <= took < 2.5, f"the attempt took {took:.2f} s"  # the drip lasts 8 s
    assert caught.value.outcome == "timeout"
    assert "AttemptTimeout" in caught.value.last_error
    assert conn.closed_at is not None and conn.closed_at - conn.opened_at < 3.0


def attempts(host: str, result: str) -> float:
    labels = {"host": host, "result": result}
    return REGISTRY.get_sample_value("cqrs_gateway_attempts_total", labels) or 0.0


async def test_slow_receivers_taking_the_pool_make_others_wait_in_turn_not_fail() -> None:
    """Pool of 2, four dripping receivers (four hosts): a healthy host's call waits for a
    connection in order and is served when an attempt ends at its timeout; a call that
    cannot wait that long is RateLimited("pool"): nothing sent, no failure of its host."""
    servers = [HostileServer(drip(0.1)) for _ in range(4)]
    async with Receiver() as healthy, gateway(max_connections=2, retry_attempts=1) as gw:
        for s in servers:
            await s.__aenter__()
        try:
            slow = [
                asyncio.create_task(gw.request("POST", s.url("/drip"), timeout_s=0.6))
                for s in servers
            ]
            await asyncio.sleep(0.2)  # two of them hold the pool, two wait for it
            assert sum(len(s.connections) for s in servers) == 2
            with pytest.raises(RateLimited) as caught:
                await gw.request("POST", healthy.url("/quick"), timeout_s=0.1)
            assert caught.value.limit == "pool" and caught.value.retryable
            assert healthy.requests == []
            assert gw.breaker_state(healthy.host_key) == "closed"

            started = time.monotonic()
            response = await gw.request("POST", healthy.url("/patient"), timeout_s=3.0)
            assert response.status_code == 200
            assert time.monotonic() - started < 2.5  # served when the first two were cut
            results = await asyncio.gather(*slow, return_exceptions=True)
            # Cut at their timeout, or (the last in line) out of time waiting for the pool.
            assert all(isinstance(r, RetriesExhausted | RateLimited) for r in results), results
            assert attempts(healthy.host_key, "timeout") == 0
        finally:
            for s in servers:
                await s.__aexit__(None, None, None)
