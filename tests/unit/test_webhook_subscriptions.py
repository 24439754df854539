"""WebhookSubscription rules on the in-memory adapter: URL guard, event types, secrets."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from common.errors import FailedPrecondition, InvalidArgument
from common.gateway import Gateway, Refused
from common.webhook_urls import delivery_vetter, url_problem
from write_server.adapters.memory import InMemoryStore, InMemoryUnitOfWork
from write_server.domain import commands
from write_server.service_layer.service import CommandService


@pytest.fixture
def store() -> InMemoryStore:
    return InMemoryStore()


def service(store: InMemoryStore, *, allow_private: bool = False) -> CommandService:
    return CommandService(lambda: InMemoryUnitOfWork(store), allow_private_webhooks=allow_private)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/hook",
        "http://localhost/hook",
        "http://169.254.169.254/latest/meta-data/",  # cloud metadata (link-local)
        "http://[fe80::1]/x",
        "http://10.0.0.7/x",
        "http://192.168.1.1/x",
        "http://[::1]/x",
        "http://[::ffff:127.0.0.1]/x",
        "http://0.0.0.0/x",
        "http://metadata.google.internal/computeMetadata/v1/",
        "http://api.localhost/x",
    ],
)
def test_private_link_local_and_metadata_addresses_are_refused(url: str) -> None:
    assert url_problem(url, allow_private=False) is not None
    assert url_problem(url, allow_private=True) is None


@pytest.mark.parametrize(
    "url", ["ftp://example.com/x", "example.com/x", "http:///x", "https://u:p@example.com/x",
            "javascript:alert(1)", "http://example.com:0/", "http://example.com/#frag"],
)  # fmt: skip
def test_malformed_urls_are_refused_even_when_private_is_allowed(url: str) -> None:
    assert url_problem(url, allow_private=True) is not None


def test_public_urls_pass() -> None:
    assert url_problem("https://hooks.example.com/shop?x=1", allow_private=False) is None
    assert url_problem("http://93.184.216.34:8443/in", allow_private=False) is None


async def test_create_returns_a_standard_webhooks_secret_kept_out_of_the_event(
    store: InMemoryStore,
) -> None:
    result = await service(store).execute(
        commands.CreateWebhookSubscription(
            url="https://hooks.example.com/in", event_types=("OrderPlaced",), description="erp"
        )
    )
    assert result.secret.startswith("whsec_")
    assert len(base64.b64decode(result.secret.removeprefix("whsec_"))) == 32
    (recorded,) = store.events
    assert recorded.event.event_type == "WebhookSubscriptionCreated"
    assert result.secret not in repr(recorded.event.payload())
    assert recorded.event.payload() == {
        "url": "https://hooks.example.com/in",
        "event_types": ["OrderPlaced"],
        "description": "erp",
    }
    assert store.webhooks[result.id].secret == result.secret


async def test_every_bad_field_is_reported_at_once(store: InMemoryStore) -> None:
    with pytest.raises(InvalidArgument) as info:
        await service(store).execute(
            commands.CreateWebhookSubscription(
                url="http://169.254.169.254/",
                event_types=("OrderPlaced", "NoSuchEvent", "OrderPlaced", "WebhookSecretRotated"),
                description="x" * 6000,
            )
        )
    assert [v.field for v in info.value.violations] == [
        "url", "event_types[1]", "event_types[2]", "event_types[3]", "description",
    ]  # fmt: skip
    assert store.events == []


async def test_private_urls_are_accepted_when_allowed(store: InMemoryStore) -> None:
    result = await service(store, allow_private=True).execute(
        commands.CreateWebhookSubscription(url="http://127.0.0.1:9/x")
    )
    assert store.webhooks[result.id].event_types == []


async def test_rotate_changes_the_secret_and_disable_is_final(store: InMemoryStore) -> None:
    svc = service(store)
    created = await svc.execute(commands.CreateWebhookSubscription(url="https://a.example/x"))
    rotated = await svc.execute(commands.RotateWebhookSecret(id=created.id, expected_version=1))
    assert rotated.secret.startswith("whsec_") and rotated.secret != created.secret
    assert store.webhooks[created.id].secret == rotated.secret
    assert store.webhooks[created.id].previous_secret == created.secret
    assert rotated.version == 2
    disabled = await svc.execute(commands.DisableWebhookSubscription(id=created.id))
    assert disabled.secret == "" and disabled.version == 3
    with pytest.raises(FailedPrecondition):
        await svc.execute(commands.RotateWebhookSecret(id=created.id))
    with pytest.raises(FailedPrecondition):
        await svc.execute(commands.DisableWebhookSubscription(id=created.id))
    assert [e.event.event_type for e in store.events] == [
        "WebhookSubscriptionCreated", "WebhookSecretRotated", "WebhookSubscriptionDisabled",
    ]  # fmt: skip


async def test_a_retried_create_returns_the_same_secret(store: InMemoryStore) -> None:
    svc = service(store)
    cmd = commands.CreateWebhookSubscription(url="https://a.example/x", request_id="r-1")
    first, again = await svc.execute(cmd), await svc.execute(cmd)
    assert again == first and len(store.webhooks) == 1


def _loopback_alias() -> str | None:
    """A name /etc/hosts maps to a loopback address (not ``localhost``): resolving it reads
    that file only, never a DNS server (this machine may only talk to itself)."""
    try:
        lines = Path("/etc/hosts").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split("#", 1)[0].split()
        if len(fields) >= 2 and fields[0].startswith("127."):
            names = [n for n in fields[1:] if n != "localhost" and "." not in n]
            if names:
                return names[0]
    return None


async def test_a_name_that_resolves_to_a_private_address_is_refused_before_delivery() -> None:
    alias = _loopback_alias()
    if alias is None:
        pytest.skip("no loopback alias in /etc/hosts to resolve without DNS")
    url = f"http://{alias}:9/hook"
    assert url_problem(url, allow_private=False) is None  # a name passes at subscription time
    gateway = Gateway(name="test", vet_address=delivery_vetter(allow_private=False))
    try:
        with pytest.raises(Refused) as caught:  # the system resolver, then the vetting
            await gateway.request("POST", url)
    finally:
        await gateway.aclose()
    assert not caught.value.retryable
    assert f"{alias!r} resolves to 127." in str(caught.value)
    assert str(caught.value).startswith("refused: ")
