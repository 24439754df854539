"""API tokens, TLS and mutual TLS on real server processes, with grpc clients and grpcurl.

Tokens: the write server refuses calls without a write token (UNAUTHENTICATED, or
PERMISSION_DENIED for a read token) and records the token's subject with the events; the
read server wants a read or a write token; health and reflection stay open; no token ever
reaches a log. TLS: a plaintext client is refused; with a client CA, a client without a
certificate is refused and the certificate's common name is the recorded subject.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from common.pb.shop.v1 import command_service_pb2 as cpb
from common.pb.shop.v1 import command_service_pb2_grpc as cpb_grpc
from common.pb.shop.v1 import history_pb2
from common.pb.shop.v1 import query_service_pb2 as qpb
from common.pb.shop.v1 import query_service_pb2_grpc as qpb_grpc
from common.settings import Settings
from tests.support.certs import OPENSSL, Certs, make_certs
from tests.support.servers import Process, env_for, free_port, grpcurl, start
from tests.support.system import System

pytestmark = pytest.mark.e2e

WRITE_TOKEN = "w-7Hq2-s3cret"
READ_TOKEN = "r-9Kx4-0th3r"


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


@pytest.fixture
def guarded(settings: Settings, tmp_path: Path) -> Iterator[System]:
    tokens_file = tmp_path / "read-tokens"
    tokens_file.write_text(f"# read-only dashboards\ndash:{READ_TOKEN}\n")
    system = System(
        settings,
        tmp_path,
        extra_env={
            "CQRS_WRITE_TOKENS": f"ci:{WRITE_TOKEN},alice:another-{WRITE_TOKEN}",
            "CQRS_READ_TOKENS_FILE": str(tokens_file),
            "CQRS_INTERNAL_SUBJECTS": "ci",  # may call RecordPaymentResult; alice may not
            "CQRS_LOG_LEVEL": "DEBUG",  # the access log too: it must not show tokens either
        },
    )
    try:
        system.start("write")
        system.start("read")
        yield system
    finally:
        codes = system.stop_all()
    logs = "".join(p.log() for p in system.processes.values())
    assert WRITE_TOKEN not in logs and READ_TOKEN not in logs, "a token reached a log"
    assert codes == {"write": 0, "read": 0}, logs[-3000:]


def _code(call: object) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as raised:
        call()  # type: ignore[operator]
    return raised.value.code()


def test_tokens_guard_writes_and_reads_and_name_the_subject(guarded: System) -> None:
    with grpc.insecure_channel(guarded.write) as wch, grpc.insecure_channel(guarded.read) as rch:
        write = cpb_grpc.CommandServiceStub(wch)
        read = qpb_grpc.QueryServiceStub(rch)
        create = cpb.CreateProductRequest(name="Mug", price_cents=100, currency="EUR")

        assert _code(lambda: write.CreateProduct(create)) == grpc.StatusCode.UNAUTHENTICATED
        assert (
            _code(lambda: write.CreateProduct(create, metadata=bearer("guess")))
            == grpc.StatusCode.UNAUTHENTICATED
        )
        assert (
            _code(lambda: write.CreateProduct(create, metadata=(("authorization", WRITE_TOKEN),)))
            == grpc.StatusCode.UNAUTHENTICATED
        )
        assert (
            _code(lambda: write.CreateProduct(create, metadata=bearer(WRITE_TOKEN[:-1])))
            == grpc.StatusCode.UNAUTHENTICATED
        )
        denied = _code(lambda: write.CreateProduct(create, metadata=bearer(READ_TOKEN)))
        assert denied == grpc.StatusCode.PERMISSION_DENIED
        # Refused before decoding: undecodable bytes without a token are UNAUTHENTICATED.
        raw = wch.unary_unary("/shop.v1.CommandService/CreateProduct")
        assert _code(lambda: raw(b"\xff\xff\xff")) == grpc.StatusCode.UNAUTHENTICATED

        created = write.CreateProduct(create, metadata=bearer(WRITE_TOKEN))

        history = qpb.GetAggregateHistoryRequest(
            aggregate_type=history_pb2.AGGREGATE_TYPE_PRODUCT, aggregate_id=created.id
        )
        assert _code(lambda: read.GetAggregateHistory(history)) == grpc.StatusCode.UNAUTHENTICATED
        for token in (READ_TOKEN, WRITE_TOKEN):  # a write token reads too
            events = read.GetAggregateHistory(history, metadata=bearer(token)).events
            assert [e.metadata.subject for e in events] == ["ci"]

        # Health stays open on both servers.
        for channel in (wch, rch):
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
            assert reply.status == health_pb2.HealthCheckResponse.SERVING

    # Reflection stays open (grpcurl lists without a token) and grpcurl sends the header.
    listed = subprocess.run(
        [grpcurl(), "-plaintext", guarded.write, "list"], capture_output=True, text=True, timeout=30
    )
    assert "shop.v1.CommandService" in listed.stdout, listed.stderr
    body = json.dumps({"name": "Teapot", "price_cents": 900, "currency": "EUR"})
    method = "shop.v1.CommandService/CreateProduct"
    refused = subprocess.run(
        [grpcurl(), "-plaintext", "-d", body, guarded.write, method],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert "Unauthenticated" in refused.stderr
    header = f"authorization: Bearer another-{WRITE_TOKEN}"
    accepted = subprocess.run(
        [grpcurl(), "-plaintext", "-H", header, "-d", body, guarded.write, method],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert accepted.returncode == 0 and '"id"' in accepted.stdout, accepted.stderr


def test_record_payment_result_is_internal(guarded: System) -> None:
    """Only the subjects in CQRS_INTERNAL_SUBJECTS may report payment results."""
    result = cpb.RecordPaymentResultRequest(
        order_id="01a233c8-f3b2-78d7-bf31-86940c60d1a6", outcome=cpb.PAYMENT_OUTCOME_FAILED,
        reason="card_declined",
    )  # fmt: skip
    with grpc.insecure_channel(guarded.write) as channel:
        write = cpb_grpc.CommandServiceStub(channel)
        with pytest.raises(grpc.RpcError) as alice:
            write.RecordPaymentResult(result, metadata=bearer(f"another-{WRITE_TOKEN}"))
        assert alice.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "CQRS_INTERNAL_SUBJECTS" in (alice.value.details() or "")
        assert _code(lambda: write.RecordPaymentResult(result)) == grpc.StatusCode.UNAUTHENTICATED
        # The internal subject gets through to the command: that order does not exist.
        found = _code(lambda: write.RecordPaymentResult(result, metadata=bearer(WRITE_TOKEN)))
        assert found == grpc.StatusCode.NOT_FOUND


def _db_rows(settings: Settings, query: str) -> list[str]:
    async def fetch() -> list[str]:
        conn = await asyncpg.connect(settings.asyncpg_dsn)
        try:
            return [str(row[0]) for row in await conn.fetch(query)]
        finally:
            await conn.close()

    return asyncio.run(fetch())


def test_another_subject_replaying_a_request_id_gets_no_secret(guarded: System) -> None:
    """The request_id of a secret-revealing command is in the history any reader sees;
    replaying it with another write token is a new command, not the first reply."""
    ci, alice = bearer(WRITE_TOKEN), bearer(f"another-{WRITE_TOKEN}")
    create = cpb.CreateWebhookSubscriptionRequest(
        url="https://hooks.example.com/in", request_id="hook-create-1"
    )
    with grpc.insecure_channel(guarded.write) as wch, grpc.insecure_channel(guarded.read) as rch:
        write = cpb_grpc.CommandServiceStub(wch)
        created = write.CreateWebhookSubscription(create, metadata=ci)
        assert created.secret.startswith("whsec_")
        history = qpb_grpc.QueryServiceStub(rch).GetAggregateHistory(
            qpb.GetAggregateHistoryRequest(
                aggregate_type=history_pb2.AGGREGATE_TYPE_WEBHOOK_SUBSCRIPTION,
                aggregate_id=created.id,
            ),
            metadata=bearer(READ_TOKEN),
        )
        assert [e.metadata.request_id for e in history.events] == ["hook-create-1"]

        # alice "replays" ci's request: her own new subscription, never ci's secret.
        replayed = write.CreateWebhookSubscription(create, metadata=alice)
        assert replayed.id != created.id
        assert replayed.secret not in ("", created.secret)
        # ci's own retry (a lost reply) still gets ci's secret.
        assert write.CreateWebhookSubscription(create, metadata=ci) == created

        rotate = cpb.RotateWebhookSecretRequest(
            id=created.id, expected_version=1, request_id="hook-rotate-1"
        )
        rotated = write.RotateWebhookSecret(rotate, metadata=ci)
        assert rotated.secret not in ("", created.secret)
        with pytest.raises(grpc.RpcError) as stale:
            write.RotateWebhookSecret(rotate, metadata=alice)
        assert stale.value.code() == grpc.StatusCode.ABORTED
        assert write.RotateWebhookSecret(rotate, metadata=ci) == rotated
        # The create's secret was replaced: its retry does not show the new one.
        with pytest.raises(grpc.RpcError) as replaced:
            write.CreateWebhookSubscription(create, metadata=ci)
        assert replaced.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "replaced by a later rotation" in (replaced.value.details() or "")

    stored = _db_rows(guarded.settings, "SELECT reply::text FROM command_requests")
    assert len(stored) == 3 and not any("whsec_" in reply for reply in stored)
    subjects = _db_rows(guarded.settings, "SELECT subject FROM command_requests ORDER BY 1")
    assert subjects == ["alice", "ci", "ci"]


def test_a_bad_token_setting_stops_the_server_without_showing_a_token(
    settings: Settings, tmp_path: Path
) -> None:
    env = env_for(settings, CQRS_WRITE_TOKENS=f"ci:{WRITE_TOKEN},alice:{WRITE_TOKEN}")
    process = start(["write-server"], env, tmp_path / "write.log")
    assert process.proc.wait(30) == 2
    assert "'alice' and 'ci' share a token" in process.log()
    assert WRITE_TOKEN not in process.log()


needs_openssl = pytest.mark.skipif(OPENSSL is None, reason="openssl is not installed")


@pytest.fixture
def certs(tmp_path: Path) -> Certs:
    return make_certs(tmp_path / "certs")


def _tls_env(settings: Settings, certs: Certs, **extra: str) -> dict[str, str]:
    return env_for(
        settings,
        CQRS_TLS_CERT=str(certs.server_cert),
        CQRS_TLS_KEY=str(certs.server_key),
        CQRS_TLS_CA=str(certs.ca),
        **extra,
    )


def _wait_tls(address: str, credentials: grpc.ChannelCredentials, process: Process) -> None:
    deadline = time.monotonic() + 30
    with grpc.secure_channel(address, credentials) as channel:
        while True:
            assert process.proc.poll() is None, process.log()
            try:
                health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=1
                )
                return
            except grpc.RpcError:
                assert time.monotonic() < deadline, process.log()
                time.sleep(0.2)


@needs_openssl
def test_tls_and_mutual_tls(settings: Settings, certs: Certs, tmp_path: Path) -> None:
    ca = certs.ca.read_bytes()
    with_cert = grpc.ssl_channel_credentials(
        ca, certs.client_key.read_bytes(), certs.client_cert.read_bytes()
    )
    write_port, read_port = free_port(), free_port()
    # The write server wants client certificates (mutual TLS); the read server only TLS.
    write = start(
        ["write-server"],
        _tls_env(
            settings,
            certs,
            CQRS_WRITE_PORT=str(write_port),
            CQRS_TLS_CLIENT_CA=str(certs.ca),
        ),
        tmp_path / "write.log",
    )
    read = start(
        ["read-server"],
        _tls_env(settings, certs, CQRS_READ_PORT=str(read_port)),
        tmp_path / "read.log",
    )
    try:
        write_at, read_at = f"127.0.0.1:{write_port}", f"127.0.0.1:{read_port}"
        _wait_tls(write_at, with_cert, write)
        _wait_tls(read_at, grpc.ssl_channel_credentials(ca), read)
        create = cpb.CreateProductRequest(name="Mug", price_cents=100, currency="EUR")

        with grpc.insecure_channel(write_at) as plain:
            refused = _code(
                lambda: cpb_grpc.CommandServiceStub(plain).CreateProduct(create, timeout=5)
            )
            assert refused == grpc.StatusCode.UNAVAILABLE
        with grpc.secure_channel(write_at, grpc.ssl_channel_credentials(ca)) as no_cert:
            refused = _code(
                lambda: cpb_grpc.CommandServiceStub(no_cert).CreateProduct(create, timeout=5)
            )
            assert refused == grpc.StatusCode.UNAVAILABLE
        with grpc.secure_channel(write_at, with_cert) as channel:
            created = cpb_grpc.CommandServiceStub(channel).CreateProduct(create, timeout=10)
        with grpc.secure_channel(read_at, grpc.ssl_channel_credentials(ca)) as channel:
            events = (
                qpb_grpc.QueryServiceStub(channel)
                .GetAggregateHistory(
                    qpb.GetAggregateHistoryRequest(
                        aggregate_type=history_pb2.AGGREGATE_TYPE_PRODUCT,
                        aggregate_id=created.id,
                    ),
                    timeout=10,
                )
                .events
            )
        assert [e.metadata.subject for e in events] == [certs.client_cn]

        # grpcurl over mutual TLS, and `cqrs probe` with the client settings.
        tls_flags = ["-cacert", str(certs.ca), "-cert", str(certs.client_cert)]
        tls_flags += ["-key", str(certs.client_key)]
        body = json.dumps({"name": "Teapot", "price_cents": 900, "currency": "EUR"})
        method = "shop.v1.CommandService/CreateProduct"
        called = subprocess.run(
            [grpcurl(), *tls_flags, "-d", body, write_at, method],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert called.returncode == 0 and '"id"' in called.stdout, called.stderr
        no_key = subprocess.run(
            [grpcurl(), "-cacert", str(certs.ca), write_at, "list"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert no_key.returncode != 0
        probe_env = _tls_env(
            settings,
            certs,
            CQRS_WRITE_PORT=str(write_port),
            CQRS_TLS_CLIENT_CERT=str(certs.client_cert),
            CQRS_TLS_CLIENT_KEY=str(certs.client_key),
        )
        probed = subprocess.run(
            [*_cqrs(), "probe", "write"], env=probe_env, capture_output=True, text=True, timeout=30
        )
        assert probed.returncode == 0, probed.stdout + probed.stderr
    finally:
        codes = [write.stop(), read.stop()]
    assert codes == [0, 0], write.log()[-2000:] + read.log()[-2000:]


def _client_without_cn(certs: Certs) -> tuple[bytes, bytes]:
    """(key, certificate) of a client certificate signed by the test CA whose subject has
    no common name."""
    assert OPENSSL is not None
    directory = certs.ca.parent

    def run(*args: str) -> None:
        subprocess.run([OPENSSL, *args], cwd=directory, check=True, capture_output=True, timeout=60)

    run(
        "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", "nocn.key", "-out", "nocn.csr", "-subj", "/O=cqrs tests/OU=no common name",
    )  # fmt: skip
    (directory / "nocn.ext").write_text("extendedKeyUsage=clientAuth\n")
    run(
        "x509", "-req", "-in", "nocn.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "nocn.pem", "-days", "2", "-extfile", "nocn.ext",
    )  # fmt: skip
    return (directory / "nocn.key").read_bytes(), (directory / "nocn.pem").read_bytes()


@needs_openssl
def test_a_client_certificate_without_a_common_name_is_nobody(
    settings: Settings, certs: Certs, tmp_path: Path
) -> None:
    """Over mutual TLS a certificate without a CN has the empty subject: it may not report
    payments nor be shown webhook secrets; a CN in CQRS_INTERNAL_SUBJECTS may report."""
    ca = certs.ca.read_bytes()
    named = grpc.ssl_channel_credentials(
        ca, certs.client_key.read_bytes(), certs.client_cert.read_bytes()
    )
    nameless = grpc.ssl_channel_credentials(ca, *_client_without_cn(certs))
    port = free_port()
    write = start(
        ["write-server"],
        _tls_env(
            settings,
            certs,
            CQRS_WRITE_PORT=str(port),
            CQRS_TLS_CLIENT_CA=str(certs.ca),
            CQRS_INTERNAL_SUBJECTS=certs.client_cn,
        ),
        tmp_path / "write.log",
    )
    result = cpb.RecordPaymentResultRequest(
        order_id="01a233c8-f3b2-78d7-bf31-86940c60d1a6", outcome=cpb.PAYMENT_OUTCOME_CAPTURED,
        provider_charge_id="ch_1", amount_cents=500, currency="EUR",
    )  # fmt: skip
    try:
        address = f"127.0.0.1:{port}"
        _wait_tls(address, named, write)
        with grpc.secure_channel(address, nameless) as channel:
            stub = cpb_grpc.CommandServiceStub(channel)
            with pytest.raises(grpc.RpcError) as nobody:
                stub.RecordPaymentResult(result, timeout=10)
            assert nobody.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert "no subject" in (nobody.value.details() or "")
            subscribe = cpb.CreateWebhookSubscriptionRequest(url="https://hooks.example.com/in")
            denied = _code(lambda: stub.CreateWebhookSubscription(subscribe, timeout=10))
            assert denied == grpc.StatusCode.PERMISSION_DENIED
            # Ordinary commands stay open to every certificate the CA signed.
            create = cpb.CreateProductRequest(name="Mug", price_cents=100, currency="EUR")
            assert stub.CreateProduct(create, timeout=10).version == 1
        with grpc.secure_channel(address, named) as channel:
            # The internal subject gets through to the command: that order does not exist.
            found = _code(
                lambda: cpb_grpc.CommandServiceStub(channel).RecordPaymentResult(result, timeout=10)
            )
            assert found == grpc.StatusCode.NOT_FOUND
    finally:
        code = write.stop()
    assert code == 0, write.log()[-2000:]


def _cqrs() -> list[str]:
    import sys

    return [sys.executable, "-m", "cqrs"]
