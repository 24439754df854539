"""`cqrs up` helpers that need no running service: probes against local sockets,
URL rewriting, the "nothing reachable, nothing installed" message, the printed examples."""

from __future__ import annotations

import dataclasses
import json
import shlex
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from common.settings import Settings, connect_address, load_settings, to_environ
from cqrs.instances import (
    Lookup,
    Probe,
    ServicesUnavailable,
    ensure_services,
    free_port,
    is_local_host,
    probe_postgres,
    probe_redis,
    url_host_port,
    with_port,
)
from cqrs.up import (
    for_this_machine,
    grpcurl_examples,
    integrations,
    redact,
    sandbox_port,
    up,
)
from sandbox import DEFAULT_PORT as SANDBOX_PORT

NOTHING_INSTALLED = Lookup(path="", pg_bin_globs=())


@pytest.fixture
def silent_listener() -> Iterator[int]:
    """A port where connections are accepted (by the kernel) but nothing ever replies."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def _unreachable_settings() -> Settings:
    return Settings(
        database_url=f"postgresql://postgres@127.0.0.1:{free_port()}/shop",
        redis_url=f"redis://127.0.0.1:{free_port()}/0",
    )


def test_nothing_reachable_and_nothing_installed_names_both_and_the_fixes(tmp_path: Path) -> None:
    settings = _unreachable_settings()
    with pytest.raises(ServicesUnavailable) as info:
        ensure_services(settings, tmp_path / ".data", lookup=NOTHING_INSTALLED, timeout=0.2)
    message = str(info.value)
    pg_port = url_host_port(settings.database_url, 5432)[1]
    redis_port = url_host_port(settings.redis_url, 6379)[1]
    assert f"PostgreSQL at 127.0.0.1:{pg_port}" in message
    assert "initdb, pg_ctl" in message
    assert f"Redis at 127.0.0.1:{redis_port}" in message
    assert "redis-server is not on PATH" in message
    assert "apt-get install postgresql redis-server" in message
    assert "docker compose up -d postgres redis" in message
    assert not (tmp_path / ".data").exists()  # nothing was started or created


def test_an_unreachable_redis_cluster_is_reported_never_replaced(tmp_path: Path) -> None:
    """A ``redis+cluster://`` URL is probed at its first node; when nothing answers there,
    no private single Redis stands in for the cluster (even with redis-server installed)."""
    first, second = free_port(), free_port()
    settings = dataclasses.replace(
        _unreachable_settings(),
        redis_url=f"redis+cluster://127.0.0.1:{first},127.0.0.1:{second}",
    )
    with pytest.raises(ServicesUnavailable) as info:
        ensure_services(settings, tmp_path / ".data", lookup=Lookup(), timeout=0.2)
    message = str(info.value)
    assert f"Redis Cluster at 127.0.0.1:{first} (nothing answers there)" in message
    assert "`cqrs up --cluster`" in message


def test_up_exits_2_with_the_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = up(_unreachable_settings(), tmp_path / ".data", lookup=NOTHING_INSTALLED)
    assert code == 2
    assert "apt-get install postgresql redis-server" in capsys.readouterr().err


def test_probes_tell_closed_from_foreign(silent_listener: int) -> None:
    closed = free_port()
    assert probe_postgres("127.0.0.1", closed, 0.2) is Probe.CLOSED
    assert probe_redis("127.0.0.1", closed, 0.2) is Probe.CLOSED
    assert probe_postgres("127.0.0.1", silent_listener, 0.2) is Probe.FOREIGN
    assert probe_redis("127.0.0.1", silent_listener, 0.2) is Probe.FOREIGN


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://postgres@127.0.0.1:5432/shop", "postgresql://postgres@127.0.0.1:6000/shop"),
        (
            "postgresql://u:p%40ss@localhost/shop?x=1",
            "postgresql://u:p%40ss@localhost:6000/shop?x=1",
        ),
        ("redis://[::1]:6379/0", "redis://[::1]:6000/0"),
        ("redis://:secret@127.0.0.1/2", "redis://:secret@127.0.0.1:6000/2"),
    ],
)
def test_with_port_keeps_everything_else(url: str, expected: str) -> None:
    assert with_port(url, 6000) == expected


def test_url_host_port_defaults() -> None:
    assert url_host_port("postgresql:///shop", 5432) == ("localhost", 5432)
    assert url_host_port("redis://10.1.2.3:7000/0", 6379) == ("10.1.2.3", 7000)


def test_only_this_machine_gets_private_instances() -> None:
    assert is_local_host("localhost")
    assert is_local_host("127.0.0.1")
    assert is_local_host("::1")
    assert not is_local_host("db.example.com")
    assert not is_local_host("10.0.0.5")


def test_to_environ_round_trips() -> None:
    settings = Settings(database_url="postgresql://a@h:1/d", write_port=7001, read_metrics_port=0)
    assert load_settings(to_environ(settings)) == settings


def test_connect_address_for_wildcard_and_ipv6() -> None:
    assert connect_address("0.0.0.0", 50051) == "127.0.0.1:50051"
    assert connect_address("::", 50051) == "[::1]:50051"
    assert connect_address("127.0.0.1", 50052) == "127.0.0.1:50052"


def test_redact_hides_passwords_only() -> None:
    assert redact("redis://:secret@h:1/0") == "redis://:***@h:1/0"
    assert redact("postgresql://u:pw@h/d") == "postgresql://u:***@h/d"
    assert redact("postgresql://u@h/d") == "postgresql://u@h/d"


def test_grpcurl_examples_are_pasteable() -> None:
    settings = Settings(write_host="0.0.0.0", write_port=7001, read_port=7002)
    create, listing = (shlex.split(command) for command in grpcurl_examples(settings))
    assert create[-2:] == ["127.0.0.1:7001", "shop.v1.CommandService/CreateProduct"]
    body = json.loads(create[create.index("-d") + 1])
    assert body["currency"] == "EUR"
    assert {"name", "price_cents", "stock"} <= body.keys()
    assert listing[-2:] == ["127.0.0.1:7002", "shop.v1.QueryService/ListProducts"]
    assert "-plaintext" in create and "-plaintext" in listing


def test_the_sandbox_keeps_its_port_unless_it_is_taken() -> None:
    """`cqrs up` puts the payments sandbox on 8095 (the README's `curl` lines), and on
    another free port only when something holds 8095."""
    with socket.socket() as holder:
        try:
            holder.bind(("127.0.0.1", SANDBOX_PORT))
        except OSError:
            pytest.skip("something else holds 8095 on this machine")
        holder.listen()
        other = sandbox_port()
        assert other != SANDBOX_PORT and other > 0
    assert sandbox_port() == SANDBOX_PORT


def test_the_banner_says_which_integration_is_on_and_how_to_turn_on_the_others() -> None:
    off = "\n".join(integrations(Settings(), sandbox=False))
    assert "payments      off: confirmed orders ship unpaid" in off
    assert "NATS relay    off: set CQRS_NATS_URL" in off
    assert "private and loopback URLs refused" in off
    assert "API tokens    off" in off
    on = Settings(
        payments_url="http://127.0.0.1:8095",
        nats_url="nats://relay:s3cret@127.0.0.1:4222",
        read_tokens="dash:" + "r" * 32,
        webhooks_allow_private=True,
    )
    shown = "\n".join(integrations(on, sandbox=True))
    assert "payments      on: http://127.0.0.1:8095 (the sandbox:" in shown
    assert "NATS relay    on: nats://relay:***@127.0.0.1:4222 stream SHOP_EVENTS" in shown
    assert "s3cret" not in shown and "private URLs allowed" in shown
    assert "API tokens    on for read calls" in shown


def test_a_system_for_this_machine_allows_local_receivers_and_finds_a_local_nats() -> None:
    """`cqrs up --local` (`make run`): servers on loopback may deliver webhooks to local
    receivers; a NATS answering locally gets the events; what is set explicitly stays."""
    with socket.socket() as nats:
        nats.bind(("127.0.0.1", 0))
        nats.listen()
        answering = ("127.0.0.1", nats.getsockname()[1])
        local = for_this_machine(Settings(), nats=answering)
    assert local.webhooks_allow_private
    assert local.nats_url == f"nats://127.0.0.1:{answering[1]}"
    silent = ("127.0.0.1", free_port())
    assert for_this_machine(Settings(), nats=silent).nats_url == ""
    chosen = Settings(nats_url="nats://elsewhere:4222")
    assert for_this_machine(chosen, nats=answering).nats_url == "nats://elsewhere:4222"
    exposed = Settings(write_host="0.0.0.0")  # reachable from other machines: not relaxed
    assert not for_this_machine(exposed, nats=silent).webhooks_allow_private


@pytest.mark.parametrize(
    ("ephemeral", "low", "high"),
    [("32768\t60999\n", 20000, 22767), ("10000\t65535\n", 20000, 55535), ("", 20000, 22767)],
)
def test_a_cluster_node_and_its_bus_port_stay_below_the_ephemeral_range(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ephemeral: str, low: int, high: int
) -> None:
    # An outgoing connection may take a free port of the ephemeral range at any moment:
    # the node's port and its bus port (+10000) are picked below it where they fit (a
    # range starting too low to leave room: anywhere a pair is free; unreadable: Linux's).
    from cqrs.instances import cluster

    if ephemeral:
        (tmp_path / "range").write_text(ephemeral)
    monkeypatch.setattr(cluster, "_EPHEMERAL", tmp_path / "range")
    ports = [cluster.cluster_port() for _ in range(200)]
    assert all(low <= p <= high for p in ports), (min(ports), max(ports))
