"""The NATS JetStream relay (``nats:events``) against real PostgreSQL and NATS: every event
exactly once, in per-aggregate order, with its headers; re-publishing after a lost
checkpoint adds nothing, even past the duplicate window (the fence); a NATS outage is
retried, never a poison event; an unpublishable event is one."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import json
import shutil
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from nats.js.api import StreamConfig
from prometheus_client import REGISTRY

from common import events as ev
from common.outages import is_transient
from common.positions import ORIGIN
from cqrs.instances import Lookup, PrivateNats, find_nats_server, free_port
from projector import main as projector_main
from projector import status as status_module
from projector.bootstrap import App, open_app
from projector.errors import NotRebuildable
from projector.outbox import read_batch
from projector.rebuild import catch_up
from projector.relay import NatsRelay, RelayUnavailable
from projector.relay import headers as h
from projector.runner import ConsumerRunner, Outcome
from projector.stores import pg_checkpoints
from projector.verify import WriteModelReference
from projector.wakeup import Wakeup
from tests.conftest import fresh_settings
from tests.support.events import Shop, eventually
from tests.support.nats import (
    NATS_URL,
    StreamNames,
    assert_exactly_once,
    connected,
    delete_stream,
    read_stream,
    stream_count,
    unique_stream,
)
from tests.support.projector import (
    applied_total,
    below_the_horizon,
    last_event,
    leading,
    some_history,
)

pytestmark = [pytest.mark.integration, pytest.mark.nats]

NAME = "nats:events"


def sample(metric: str, relay: str = NAME) -> float:
    return REGISTRY.get_sample_value(metric, {"relay": relay}) or 0.0


EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "nats_consumer.py"


@pytest.fixture
def names() -> StreamNames:
    return unique_stream()


@contextlib.asynccontextmanager
async def relay_app(
    template_database: str, names: StreamNames, url: str = NATS_URL, **overrides: Any
) -> AsyncIterator[App]:
    """The projector's App with the relay on a stream of this test's own."""
    try:
        async with (
            fresh_settings(
                template_database,
                nats_url=url,
                nats_stream=names.stream,
                nats_subject_prefix=names.prefix,
                **overrides,
            ) as settings,
            open_app(settings) as app,
        ):
            yield app
    finally:
        await delete_stream(names.stream, url)


@pytest.fixture
async def app(template_database: str, names: StreamNames) -> AsyncIterator[App]:
    async with relay_app(template_database, names) as projector_app:
        yield projector_app


def relay_of(app: App) -> NatsRelay:
    relay = app.consumer(NAME)
    assert isinstance(relay, NatsRelay)
    return relay


def another_relay(app: App) -> NatsRelay:
    """A second instance on the same checkpoint row and stream (a restarted process)."""
    s = app.settings
    return NatsRelay(
        app.pool,
        s.nats_url,
        stream=s.nats_stream,
        subject_prefix=s.nats_subject_prefix,
        duplicate_window_s=s.nats_duplicate_window_s,
    )


def running(
    app: App, relay: NatsRelay | None = None
) -> contextlib.AbstractAsyncContextManager[ConsumerRunner]:
    return leading(app, relay or relay_of(app))


async def wait_relayed(app: App, relay: NatsRelay | None = None, within: float = 20) -> None:
    target = await last_event(app)
    relay = relay or relay_of(app)

    async def done() -> bool:
        return await relay.checkpoint() >= target

    await eventually(done, within=within)


async def more_events(shop: Shop) -> None:
    products = [await shop.create_product() for _ in range(3)]
    customer = await shop.create_customer()
    order = await shop.place_order(customer, [(products[0], 1), (products[1], 2)])
    await shop.set_order_status(order, "CONFIRMED")
    await shop.update_product(products[2], price_cents=5)


async def events_in_log(app: App) -> int:
    return int(await app.pool.fetchval("SELECT count(*) FROM events"))


async def test_every_event_is_relayed_once_in_order_with_its_headers(
    app: App, names: StreamNames
) -> None:
    await some_history(Shop(app.pool), size=4)
    seq = int(
        await app.pool.fetchval(
            "SELECT max(seq) FROM events WHERE event_type = $1", ev.ORDER_PLACED
        )
    )
    metadata = {"request_id": "req-42", "auth_subject": "tester", "peer": "ipv4:127.0.0.1:1"}
    await app.pool.execute(
        "UPDATE events SET metadata = $2::jsonb WHERE seq = $1", seq, json.dumps(metadata)
    )
    total = await events_in_log(app)
    published, applied = sample("cqrs_relay_published_total"), applied_total(NAME)
    async with running(app):
        await wait_relayed(app)
        lag = REGISTRY.get_sample_value(
            "cqrs_projection_lag_events", {"projection": NAME, "segment": ""}
        )
        out = io.StringIO()
        await status_module.status(app.consumers, app.pool, app.failures, out=out)
    relayed = await read_stream(names.stream)
    assert len(relayed) == total
    await assert_exactly_once(app.pool, relayed)
    # Stream order is log order ((xid, seq): here one command per transaction, so seq).
    assert [m.body["seq"] for m in relayed] == sorted(m.body["seq"] for m in relayed)

    row = await app.pool.fetchrow(
        "SELECT aggregate_type, aggregate_id::text AS id, aggregate_version, event_type, "
        "payload::text AS payload, xid::text::bigint AS xid FROM events WHERE seq = $1",
        seq,
    )
    (message,) = [m for m in relayed if m.headers[h.MSG_ID] == h.event_id(seq)]
    assert message.subject == f"{names.prefix}.Order.OrderPlaced"
    position = f"{row['xid']:020d}:{seq:020d}"
    assert message.headers == {
        "Nats-Msg-Id": f"evt_{seq}",
        "Cqrs-Event-Id": f"evt_{seq}",
        "Cqrs-Aggregate-Type": "Order",
        "Cqrs-Aggregate-Id": row["id"],
        "Cqrs-Aggregate-Version": "1",
        "Cqrs-Event-Type": "OrderPlaced",
        "Cqrs-Schema-Version": "2",
        "Cqrs-Occurred-At": message.body["occurred_at"],
        "Cqrs-Request-Id": "req-42",
        "Cqrs-Position": position,
    }
    body = message.body
    assert body["id"] == f"evt_{seq}" and body["seq"] == seq and body["position"] == position
    assert body["occurred_at"].endswith("Z") and "T" in body["occurred_at"]
    assert body["payload"] == json.loads(row["payload"])
    assert body["payload"]["customer"]["id"]  # v2, the current shape
    assert body["schema_version"] == ev.SCHEMA_VERSIONS[ev.ORDER_PLACED]
    assert body["metadata"] == metadata
    assert all(m.headers["Cqrs-Request-Id"] == "" for m in relayed if m is not message)

    # Metrics: all published once, applied under the consumer's name, no lag left.
    assert sample("cqrs_relay_published_total") - published == total
    assert applied_total(NAME) - applied == total
    assert lag == 0
    # The stream was created with the configured window; status shows the relay.
    async with connected() as nc:
        info = await nc.jetstream().stream_info(names.stream)
    assert info.config.duplicate_window == app.settings.nats_duplicate_window_s == 600
    assert info.config.subjects == [f"{names.prefix}.>"]
    line = next(x for x in out.getvalue().splitlines() if x.startswith(NAME))
    assert f"ok (stream {names.stream} ({total} msgs))" in line


async def test_a_batch_published_but_not_checkpointed_is_not_duplicated(
    app: App, names: StreamNames, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Crash after publishing, before the checkpoint: the retry publishes nothing again."""
    await some_history(Shop(app.pool))
    total = await events_in_log(app)
    relay = relay_of(app)
    commit = relay._commit
    crashes = []

    async def crash_once(batch: Any) -> None:
        if not crashes and batch.events:
            crashes.append(batch)
            raise ConnectionError("simulated: the checkpoint write was lost")
        await commit(batch)

    monkeypatch.setattr(relay, "_commit", crash_once)
    duplicates = sample("cqrs_relay_duplicates_total")
    async with running(app) as runner:
        await wait_relayed(app)
        assert runner.state == "following"
    # (The first batch may hold fewer than all: the horizon is the whole cluster's.)
    assert len(crashes) == 1 and crashes[0].events
    assert await stream_count(names.stream) == total
    # The fence skipped the whole batch: nothing even reached the duplicate window.
    assert sample("cqrs_relay_duplicates_total") == duplicates
    assert await app.failures.get(NAME) is None

    # A restarted relay whose checkpoint row went back to the origin: the same.
    await pg_checkpoints.reset(app.pool, NAME)
    restarted = another_relay(app)
    try:
        # At least as far (the cluster's horizon may have moved on since, without events).
        assert await catch_up(restarted, app.pool, 7) >= await relay.checkpoint()
    finally:
        await restarted.aclose()
    relayed = await read_stream(names.stream)
    assert len(relayed) == total
    await assert_exactly_once(app.pool, relayed)
    assert sample("cqrs_relay_duplicates_total") == duplicates  # over several batches

    # Without the fence, within the window, the stream's de-duplication drops them all.
    await pg_checkpoints.reset(app.pool, NAME)
    unfenced = another_relay(app)
    unfenced._fenced = True  # as if it had been following all along
    try:
        await catch_up(unfenced, app.pool, 500)
    finally:
        await unfenced.aclose()
    assert sample("cqrs_relay_duplicates_total") - duplicates == total
    assert await stream_count(names.stream) == total


async def test_the_fence_holds_beyond_the_duplicate_window(
    template_database: str, names: StreamNames
) -> None:
    async with relay_app(template_database, names, nats_duplicate_window_s=1.0) as app:
        await some_history(Shop(app.pool))
        total = await events_in_log(app)
        # Else a catch-up while another session holds the horizon back relays only part.
        await below_the_horizon(app)
        relay = relay_of(app)
        await catch_up(relay, app.pool, 10)
        async with connected() as nc:
            info = await nc.jetstream().stream_info(names.stream)
        assert info.config.duplicate_window == 1.0
        await pg_checkpoints.reset(app.pool, NAME)  # the checkpoint lost (a crash)
        await asyncio.sleep(1.5)  # the stream forgot the ids
        restarted = another_relay(app)
        try:
            await catch_up(restarted, app.pool, 10)
        finally:
            await restarted.aclose()
        relayed = await read_stream(names.stream)
        assert len(relayed) == total
        await assert_exactly_once(app.pool, relayed)

        # Control: without the fence the window alone would have let them all in again.
        await pg_checkpoints.reset(app.pool, NAME)
        unfenced = another_relay(app)
        unfenced._fenced = True
        try:
            await catch_up(unfenced, app.pool, 500)
        finally:
            await unfenced.aclose()
        assert await stream_count(names.stream) == 2 * total


@pytest.fixture
def private_nats() -> Iterator[PrivateNats]:
    executable = find_nats_server(Lookup())
    if executable is None:
        pytest.skip("nats-server is not installed")
    scratch = Path(tempfile.mkdtemp(prefix="cqrs-nats-"))
    server = PrivateNats(executable, scratch / "jetstream", scratch / "nats.log")
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(scratch, ignore_errors=True)


async def test_a_nats_outage_is_retried_not_poison(
    template_database: str, names: StreamNames, private_nats: PrivateNats
) -> None:
    async with relay_app(
        template_database, names, private_nats.url, projector_batch_size=20
    ) as app:
        shop = Shop(app.pool)
        await some_history(shop)
        async with running(app) as runner:
            await wait_relayed(app)
            for outage in (private_nats.stop, private_nats.kill):
                outage()
                await more_events(shop)  # committed while NATS is down

                async def retrying() -> bool:
                    return runner.state == "retrying"

                await eventually(retrying, within=15)
                # Each attempt reloads the checkpoint (PostgreSQL is up: "following" for a
                # moment), then fails to publish and backs off ("retrying").
                states = []
                for _ in range(30):
                    await asyncio.sleep(0.05)
                    states.append(runner.state)
                assert states.count("retrying") > len(states) / 2, states
                assert "stopped-on-poison" not in states
                assert await app.failures.get(NAME) is None
                assert await relay_of(app).checkpoint() < await last_event(app)
                assert "NATS unreachable" in await relay_of(app).describe()
                private_nats.start()  # same port, same store: the stream is still there
                await wait_relayed(app, within=30)
                assert runner.state == "following"
        assert await app.failures.get(NAME) is None
        relayed = await read_stream(names.stream, private_nats.url)
        assert len(relayed) == await events_in_log(app)
        await assert_exactly_once(app.pool, relayed)


async def test_an_event_too_big_for_the_stream_is_a_poison_event(
    app: App, names: StreamNames
) -> None:
    # A stream that exists already keeps its configuration: here a 4 kB message limit.
    async with connected() as nc:
        await nc.jetstream().add_stream(
            StreamConfig(name=names.stream, subjects=[f"{names.prefix}.>"], max_msg_size=4096)
        )
    shop = Shop(app.pool)
    first = await shop.create_product()
    big = await shop.create_product(description="x" * 5000)
    await shop.create_product()
    big_seq = int(
        await app.pool.fetchval("SELECT seq FROM events WHERE aggregate_id = $1::uuid", big)
    )
    runner = app.runner(relay_of(app), Wakeup())
    outcome = await asyncio.wait_for(runner.run(asyncio.Event()), 30)
    assert outcome is Outcome.FAILED and runner.state == "stopped-on-poison"
    failure = await app.failures.get(NAME)
    assert failure is not None and failure.event_seq == big_seq
    assert "exceeds" in failure.error
    relayed = await read_stream(names.stream)
    assert [m.body["aggregate_id"] for m in relayed] == [first]  # stopped right before it


async def test_a_relay_is_not_rebuilt_and_nats_errors_are_outages(
    app: App, names: StreamNames, capsys: pytest.CaptureFixture[str]
) -> None:
    relay = relay_of(app)
    assert NAME in app.names()
    assert relay not in app.select(None)  # "rebuild everything" leaves it out
    assert [c.name for c in app.select(["orders"])] == ["redis:orders", "pg:orders"]
    with pytest.raises(ValueError, match="nats:events cannot be rebuilt"):
        app.select(["events"])
    assert await projector_main.rebuild(app.settings, ["events"]) == 2
    assert "nats:events cannot be rebuilt" in capsys.readouterr().err
    with pytest.raises(NotRebuildable):
        await relay.new_copy()
    assert await relay.audit(WriteModelReference(app.pool)) is None

    # Nothing listens there: describe says so, apply raises an outage (retried).
    await Shop(app.pool).create_product()
    nowhere = NatsRelay(app.pool, f"nats://127.0.0.1:{free_port()}", stream=names.stream)
    try:
        assert "NATS unreachable" in await nowhere.describe()
        start = await nowhere.checkpoint()
        assert start == ORIGIN  # a missing row is created at the origin, never StoreLost
        batch = await read_batch(app.pool, start, nowhere.consumes, 10)
        with pytest.raises(RelayUnavailable) as raised:
            await nowhere.apply(batch)
        assert is_transient(raised.value)
        assert await nowhere.checkpoint() == ORIGIN
    finally:
        await nowhere.aclose()


def test_settings_from_the_environment() -> None:
    from common.settings import load_settings, to_environ

    s = load_settings(
        {
            "CQRS_NATS_URL": "nats://u:secret@h:4222",
            "CQRS_NATS_STREAM": "S",
            "CQRS_NATS_SUBJECT_PREFIX": "a.b",
            "CQRS_NATS_DUPLICATE_WINDOW_S": "30",
        }
    )
    assert (s.nats_url, s.nats_stream, s.nats_subject_prefix, s.nats_duplicate_window_s) == (
        "nats://u:secret@h:4222",
        "S",
        "a.b",
        30.0,
    )
    assert "secret" not in repr(s)
    assert load_settings(to_environ(s)) == s
    assert dataclasses.replace(s, nats_url="").nats_url == ""


async def test_the_readme_consumer_example_reads_every_event_in_order(
    app: App, names: StreamNames
) -> None:
    """examples/nats_consumer.py (shown in the README), as a real process on the stream."""
    await some_history(Shop(app.pool), size=3)
    total = await events_in_log(app)
    async with running(app):
        await wait_relayed(app)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(EXAMPLE), "--url", app.settings.nats_url, "--stream", names.stream,
        "--subjects", f"{names.prefix}.>", "--durable", "readme", "--max", str(total),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, out.decode()
    lines = out.decode().splitlines()
    rows = await app.pool.fetch(
        "SELECT seq, event_type, aggregate_id::text AS id FROM events ORDER BY xid, seq"
    )
    assert lines == [f"evt_{r['seq']} {r['event_type']} {r['id']}" for r in rows]
    assert len(lines) == total
