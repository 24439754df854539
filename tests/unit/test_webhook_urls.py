"""The webhook URL guard over a table of hostile URLs: IP literals in every spelling,
IPv4 carried in IPv6, and text the HTTP client would not send."""

from __future__ import annotations

import ipaddress

import httpx
import pytest

from common.webhook_urls import address_problem, delivery_vetter, embedded_ipv4, url_problem
from tests.support.hostile_urls import IP_SPELLINGS, REFUSED, UNSENDABLE


@pytest.mark.parametrize(("url", "why"), sorted(REFUSED.items()))
def test_refused_without_allow_private(url: str, why: str) -> None:
    problem = url_problem(url, allow_private=False)
    assert problem is not None, url
    assert why in problem


# A local or metadata name is what ALLOW_PRIVATE allows: those are left out here.
_UNSENDABLE_EVEN_LOCALLY = sorted(
    (url, why) for url, why in UNSENDABLE.items() if "local or metadata" not in why
)


@pytest.mark.parametrize(("url", "why"), _UNSENDABLE_EVEN_LOCALLY)
def test_what_the_client_cannot_send_is_refused_even_with_allow_private(url: str, why: str) -> None:
    assert url_problem(url, allow_private=True) is not None


@pytest.mark.parametrize("url", sorted(IP_SPELLINGS))
def test_ip_spellings_are_private_addresses_allowed_only_with_allow_private(url: str) -> None:
    allowed = url_problem(url, allow_private=True)
    # Malformed ones stay refused; every real address is accepted for local development.
    assert allowed is None or IP_SPELLINGS[url] in ("", "not one")


@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.example.com/shop?x=1",
        "http://93.184.216.34:8443/in",
        "https://bücher.example/in",  # IDNA: the client sends xn--bcher-kva.example
        "https://xn--bcher-kva.example/in",
        "https://a_b.example.com/in",
        "https://HOOKS.example.com./in",
        "http://[2606:2800:220:1:248:1893:25c8:1946]/in",
        "http://[64:ff9b::5db8:d822]/in",  # NAT64 of a public address
        "http://[2002:5db8:d822::1]/in",  # 6to4 of a public address
        "http://[::ffff:93.184.216.34]/in",
    ],
)
def test_public_urls_pass_and_the_client_accepts_them(url: str) -> None:
    assert url_problem(url, allow_private=False) is None
    httpx.URL(url)


def test_every_accepted_url_is_one_the_client_parses() -> None:
    """Whatever the guard accepts, httpx (the client) parses: the two never disagree."""
    for url in [*REFUSED, "http://example.com/", "http://127.0.0.1:9/x"]:
        if url_problem(url, allow_private=True) is None:
            httpx.URL(url)


@pytest.mark.parametrize(
    ("address", "carried"),
    [
        ("::ffff:127.0.0.1", "127.0.0.1"),
        ("::127.0.0.1", "127.0.0.1"),
        ("::ffff:0:10.0.0.1", "10.0.0.1"),
        ("64:ff9b::192.168.0.1", "192.168.0.1"),
        ("2002:c0a8:1::", "192.168.0.1"),
        ("2001:0:4136:e378:8000:63bf:80ff:fffe", "127.0.0.1"),
        ("2606:2800:220:1:248:1893:25c8:1946", None),
    ],
)
def test_ipv4_carried_in_ipv6(address: str, carried: str | None) -> None:
    found = embedded_ipv4(ipaddress.IPv6Address(address))
    assert (str(found) if found else None) == carried


def test_resolved_addresses_are_vetted_the_same_way() -> None:
    vet = delivery_vetter(allow_private=False)
    for bad in ["127.0.0.1", "10.0.0.1", "169.254.169.254", "::1", "64:ff9b::7f00:1", "0.0.0.0"]:
        assert vet(ipaddress.ip_address(bad)) is not None, bad
        assert delivery_vetter(allow_private=True)(ipaddress.ip_address(bad)) is None
    assert address_problem(ipaddress.ip_address("93.184.216.34")) is None
    assert address_problem(ipaddress.ip_address("224.0.0.1")) is not None  # multicast
