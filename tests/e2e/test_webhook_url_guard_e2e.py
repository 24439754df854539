"""The SSRF guard through the real write server (no CQRS_WEBHOOKS_ALLOW_PRIVATE): every
hostile spelling of an internal address, and every URL the HTTP client would not send, is
INVALID_ARGUMENT at CreateWebhookSubscription with a field violation on ``url``."""

from __future__ import annotations

import grpc
import pytest

from common.pb.shop.v1 import command_service_pb2 as cpb
from common.pb.shop.v1 import command_service_pb2_grpc as cpb_grpc
from tests.support.hostile_urls import REFUSED
from tests.support.servers import field_violations

pytestmark = pytest.mark.e2e


def test_hostile_urls_are_invalid_argument_at_subscription(write_server: str) -> None:
    with grpc.insecure_channel(write_server) as channel:
        write = cpb_grpc.CommandServiceStub(channel)
        accepted: list[str] = []
        refusals: dict[str, tuple[grpc.StatusCode, dict[str, str]]] = {}
        for url in sorted(REFUSED):
            try:
                write.CreateWebhookSubscription(
                    cpb.CreateWebhookSubscriptionRequest(url=url), timeout=10
                )
            except grpc.RpcError as error:
                refusals[url] = (error.code(), field_violations(error))
            else:
                accepted.append(url)
        assert accepted == [], f"{len(accepted)} internal or unsendable URLs accepted"
        for url, (code, violations) in refusals.items():
            assert code == grpc.StatusCode.INVALID_ARGUMENT, (url, code)
            assert set(violations) == {"url"}, (url, violations)
            assert REFUSED[url] in violations["url"], (url, violations)
        # The guard refuses what it must, not everything: a public name is a subscription.
        reply = write.CreateWebhookSubscription(
            cpb.CreateWebhookSubscriptionRequest(url="https://hooks.example.com/in"), timeout=10
        )
        assert reply.secret.startswith("whsec_")
