"""The projector's credential for the internal ``RecordPaymentResult``: when the write
server takes API tokens and refuses the projector's (none, or a wrong one), the payments
process sees a configuration fault it retries like an outage, never a poison event; and
``cqrs up``'s credential (``with_internal_credential``) is the one the server takes."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

import grpc
import pytest

from common.pb.shop.v1 import command_service_pb2 as cpb
from common.rpc.auth import with_internal_credential
from common.settings import Settings
from projector.payments.process import PaymentsUnavailable, WriteSide
from write_server.bootstrap import bootstrap
from write_server.server import create_server

pytestmark = pytest.mark.integration

# A result without an outcome: past authentication and authorization, INVALID_ARGUMENT.
UNKNOWN = cpb.RecordPaymentResultRequest(
    order_id="00000000-0000-4000-8000-000000000000", request_id="r-1"
)


@pytest.fixture
async def guarded(settings: Settings) -> AsyncIterator[tuple[Settings, str]]:
    """A write server taking write tokens (the README's example), payments on; its settings
    as `cqrs up` gives them to its processes, and its address."""
    configured = dataclasses.replace(
        settings, write_tokens="ci:" + "c" * 32, payments_url="http://127.0.0.1:9"
    )
    given = with_internal_credential(configured)
    app = await bootstrap(given)
    built = create_server(app, "127.0.0.1:0")
    await built.start()
    try:
        yield given, f"127.0.0.1:{built.port}"
    finally:
        await built.server.stop(None)
        await app.close()


@pytest.mark.parametrize("token", ["", "not-a-token", "c" * 32])
async def test_a_refused_credential_is_an_outage_not_a_poison_event(
    guarded: tuple[Settings, str], token: str
) -> None:
    """No token, an unknown one, and ci's (a subject that is not internal)."""
    _, address = guarded
    metadata = [("authorization", f"Bearer {token}")] if token else []
    write = WriteSide(address, None, metadata)
    try:
        with pytest.raises(PaymentsUnavailable, match="CQRS_CLIENT_TOKEN"):
            await write.record(UNKNOWN)
    finally:
        await write.aclose()


async def test_the_credential_cqrs_up_gives_the_projector_is_taken(
    guarded: tuple[Settings, str],
) -> None:
    given, address = guarded
    assert given.client_token and given.client_token not in repr(given)
    write = WriteSide(address, None, [("authorization", f"Bearer {given.client_token}")])
    try:
        with pytest.raises(grpc.aio.AioRpcError) as answered:
            await write.record(UNKNOWN)
        assert answered.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        await write.aclose()
