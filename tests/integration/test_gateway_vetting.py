"""The gateway's address vetting (DNS rebinding) against real local receivers.

A resolver stub plays the hostile DNS server (the one fake issue 20 asks for). No test may
send a request off this machine, so 127.0.0.2 stands in for "a public address" and the
test's policy refuses 127.0.0.1 ("internal"); the webhook policy itself (which refuses
both) is tested over its table in tests/unit/test_webhook_urls.py.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from common.gateway import (
    Gateway,
    Refused,
    RetriesExhausted,
)
from tests.support.certs import OPENSSL, make_certs
from tests.support.gateways import quick_gateway
from tests.support.hostile_http import HostileServer, status
from tests.support.http_receiver import Receiver, Reply
from tests.support.resolver_stub import ScriptedResolver

INTERNAL = ipaddress.ip_address("127.0.0.1")
PUBLIC = "127.0.0.2"  # stands in for a public address (see the module's docs)


def internal_refused(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    return "internal address" if address == INTERNAL else None


def gateway(
    resolver: ScriptedResolver, ssl_context: ssl.SSLContext | None = None, **overrides: Any
) -> AbstractAsyncContextManager[Gateway]:
    options = {
        "vet_address": internal_refused,
        "resolver": resolver.resolve,
        "ssl_context": ssl_context,
    }
    return quick_gateway(options=options, **overrides)


@asynccontextmanager
async def public_and_internal() -> AsyncIterator[tuple[Receiver, Receiver]]:
    """A "public" receiver on 127.0.0.2 and an internal one on 127.0.0.1, same port (a URL
    names one port: which receiver gets the request is up to the address connected to)."""
    async with Receiver(PUBLIC) as public, Receiver("127.0.0.1", public.port) as internal:
        internal.status(403, b"INTERNAL-SECRET: the admin console")
        yield public, internal


def attempts(host: str, result: str) -> float:
    labels = {"host": host, "result": result}
    return REGISTRY.get_sample_value("cqrs_gateway_attempts_total", labels) or 0.0


async def test_one_lookup_per_connection_and_the_request_goes_to_the_vetted_address() -> None:
    resolver = ScriptedResolver({"rebind.test": [[PUBLIC], ["127.0.0.1"]]})
    async with public_and_internal() as (public, internal):
        # Close after each answer: every request needs a new connection, so a new lookup.
        public.set(Reply(200, b"ok", (("Connection", "close"),)))
        url = f"http://rebind.test:{public.port}/hook"
        async with gateway(resolver, retry_attempts=3, breaker_threshold=1) as gw:
            response = await gw.request("POST", url, content=b"{}")
            assert response.status_code == 200
            assert resolver.count("rebind.test") == 1  # checked and connected with one answer
            with pytest.raises(Refused) as caught:  # the rebound answer
                await gw.request("POST", url, content=b"{}")
            # Refused is not a transport failure: no retry inside the call, no breaker count
            # (threshold 1 would have opened it and hidden the refusal behind "circuit open").
            assert resolver.count("rebind.test") == 2
            assert gw.breaker_state(url) == "closed"
            with pytest.raises(Refused):
                await gw.request("POST", url, content=b"{}")
        assert len(public.requests) == 1
        assert public.requests[0].headers["host"] == f"rebind.test:{public.port}"
        assert internal.requests == []  # never reached
    error = caught.value
    assert not error.retryable
    assert str(error).startswith("refused: ")
    assert "'rebind.test' resolves to 127.0.0.1: internal address" in str(error)
    assert attempts(f"rebind.test:{public.port}", "refused") == 2


async def test_a_failed_lookup_refuses_the_attempt_and_may_pass() -> None:
    failure = socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
    resolver = ScriptedResolver({"flaky.test": [failure, [PUBLIC]]})
    async with public_and_internal() as (public, internal):
        url = f"http://flaky.test:{public.port}/hook"
        async with gateway(resolver, retry_attempts=3) as gw:
            with pytest.raises(Refused) as caught:
                await gw.request("POST", url)
            assert caught.value.retryable  # a name service may recover
            assert "lookup of 'flaky.test' failed" in str(caught.value)
            assert resolver.count("flaky.test") == 1  # not retried inside the call
            assert (await gw.request("POST", url)).status_code == 200
        assert len(public.requests) == 1 and internal.requests == []


async def test_one_refused_address_among_several_refuses_the_name() -> None:
    resolver = ScriptedResolver({"mixed.test": [[PUBLIC, "127.0.0.1"]]})
    async with public_and_internal() as (public, internal), gateway(resolver) as gw:
        with pytest.raises(Refused, match=r"resolves to 127\.0\.0\.1"):
            await gw.request("POST", f"http://mixed.test:{public.port}/hook")
        assert public.requests == [] and internal.requests == []


async def test_an_unsendable_url_is_refused_not_a_value_error() -> None:
    async with gateway(ScriptedResolver({})) as gw:
        with pytest.raises(Refused, match="cannot send to this URL"):
            await gw.request("POST", "http://\uff45\uff58\uff41\uff4d\uff50\uff4c\uff45.com/")


# ---------------------------------------------------------------- TLS keeps the name


def _leaf(directory: Path, name: str) -> tuple[Path, Path]:
    """A server certificate for DNS:``name`` only (no IP), signed by the test CA there."""
    assert OPENSSL is not None

    def run(*args: str) -> None:
        subprocess.run([OPENSSL, *args], cwd=directory, check=True, capture_output=True)

    run(
        "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}",
    )  # fmt: skip
    (directory / f"{name}.ext").write_text(f"subjectAltName=DNS:{name}\n")
    run(
        "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext",
    )  # fmt: skip
    return directory / f"{name}.pem", directory / f"{name}.key"


@pytest.mark.skipif(OPENSSL is None, reason="openssl is not installed")
async def test_tls_checks_the_certificate_and_sends_sni_for_the_name(tmp_path: Path) -> None:
    certs = make_certs(tmp_path)
    cert, key = _leaf(tmp_path, "hooks.test")
    server_side = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_side.load_cert_chain(cert, key)
    sni: list[str | None] = []
    server_side.sni_callback = lambda _sock, name, _ctx: sni.append(name)  # type: ignore[assignment,misc,unused-ignore]
    client_side = ssl.create_default_context(cafile=str(certs.ca))
    resolver = ScriptedResolver({"hooks.test": [["127.0.0.2"]], "other.test": [["127.0.0.2"]]})
    served = HostileServer(status(200, b"tls ok"), host="127.0.0.2", ssl_context=server_side)
    async with served as s, gateway(resolver, retry_attempts=1, ssl_context=client_side) as gw:
        response = await gw.request("POST", s.url("/in", host="hooks.test", scheme="https"))
        assert (response.status_code, response.content) == (200, b"tls ok")
        # The certificate names hooks.test, not 127.0.0.2: checked against the name.
        with pytest.raises(RetriesExhausted, match=r"(?i)certificate"):
            await gw.request("POST", s.url("/in", host="other.test", scheme="https"))
    assert sni[:2] == ["hooks.test", "other.test"]
    assert s.connections[0].host == f"hooks.test:{s.port}"


async def test_concurrent_connections_each_vet_their_own_lookup() -> None:
    resolver = ScriptedResolver({"many.test": [[PUBLIC]]})
    async with public_and_internal() as (public, internal):
        public.slow(0.2)
        async with gateway(resolver, retry_attempts=1) as gw:
            url = f"http://many.test:{public.port}/hook"
            done = await asyncio.gather(*(gw.request("POST", url) for _ in range(5)))
        assert {r.status_code for r in done} == {200}
        # Five connections at once (none free to reuse): five lookups, all vetted.
        assert resolver.count("many.test") == len({r.connection for r in public.requests}) == 5
        assert internal.requests == []
