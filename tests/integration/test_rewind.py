"""Rewinding consumers (``cqrs projector rebuild --from POSITION --consumer NAME``) against
real PostgreSQL and NATS: the relay publishes the events after the position again (dropped
by JetStream within its duplicate window, appended again after it), the snapshots after it
are deleted and written again the same, the webhook fan-out queues its deliveries again;
a running leader finds out by its compare-and-set failing and goes on from the position;
every refusal changes nothing; the command's errors and exit codes."""

from __future__ import annotations

import asyncio
import contextlib
import io
import re
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from common.positions import ORIGIN, Position, encode_token
from common.settings import Settings
from projector import rewind as rewinding
from projector.bootstrap import App, open_app
from projector.consumer import Consumer
from projector.errors import CheckpointMoved
from projector.outbox import Batch
from projector.rebuild import rebuild_one
from projector.relay import NatsRelay
from projector.relay import headers as h
from projector.stores import pg_checkpoints
from tests.conftest import fresh_settings
from tests.support.events import Shop, eventually
from tests.support.http_receiver import Receiver
from tests.support.nats import (
    NATS_URL,
    StreamNames,
    assert_exactly_once,
    delete_stream,
    read_stream,
    stream_count,
    unique_stream,
)
from tests.support.projector import below_the_horizon, last_event, leading, some_history
from tests.support.servers import env_for
from write_server.bootstrap import command_service
from write_server.domain import commands

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SMALL = dict(db_pool_size=4, projector_poll_interval_ms=100)


# -- helpers ----------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def projector_app(template_database: str, **overrides: Any) -> AsyncIterator[App]:
    async with (
        fresh_settings(template_database, **{**SMALL, **overrides}) as settings,
        open_app(settings) as app,
    ):
        yield app


# A runner leading the consumer: a ``cqrs projector run`` elsewhere, for the rewind.
running = leading


async def caught_up(app: App, consumer: Consumer, within: float = 20) -> None:
    target = await last_event(app)

    async def done() -> bool:
        return await consumer.checkpoint() >= target

    await eventually(done, within=within)


async def positions(app: App) -> list[Position]:
    """Every event's position, in log order."""
    rows = await app.pool.fetch(
        "SELECT xid::text::bigint AS xid, seq FROM events ORDER BY xid, seq"
    )
    return [Position(r["xid"], r["seq"]) for r in rows]


async def rewind(app: App, names: Sequence[str], to: Position) -> tuple[int, str, str]:
    """``rebuild --from`` in this process: exit status, stdout, stderr."""
    out, err = io.StringIO(), io.StringIO()
    code = await rewinding.rewind(
        app.consumers, names, to, app.pool, dsn=app.settings.asyncpg_dsn, out=out, err=err
    )
    return code, out.getvalue(), err.getvalue()


def watch_commits(consumer: Any) -> list[tuple[str, Position, Position | None]]:
    """Record what the consumer's ``apply`` does, as the runner calls it: ("applied",
    start, next) or ("moved", expected, found) when its compare-and-set failed."""
    seen: list[tuple[str, Position, Position | None]] = []
    apply = consumer.apply

    async def recording(batch: Batch) -> None:
        try:
            await apply(batch)
        except CheckpointMoved as exc:
            seen.append(("moved", exc.expected, exc.found))
            raise
        seen.append(("applied", batch.start, batch.next))

    consumer.apply = recording
    return seen


def reloaded_at(seen: list[tuple[str, Position, Position | None]], to: Position) -> bool:
    """The leader's commit failed because the checkpoint stood at ``to``, and its next
    commit started there: it went on from the rewound position."""
    for i, (kind, _, found) in enumerate(seen):
        if kind == "moved" and found == to:
            return any(k == "applied" and start == to for k, start, _ in seen[i + 1 :])
    return False


def duplicates(relay: str = "nats:events") -> float:
    return REGISTRY.get_sample_value("cqrs_relay_duplicates_total", {"relay": relay}) or 0.0


async def snapshot_rows(app: App) -> list[tuple[Any, ...]]:
    rows = await app.pool.fetch(
        "SELECT aggregate_id::text, aggregate_version, aggregate_type, doc, occurred_at "
        "FROM read.snapshots ORDER BY aggregate_id, aggregate_version"
    )
    return [tuple(r) for r in rows]


async def long_history(shop: Shop) -> None:
    """Products with many versions (snapshots every 3 events), spread over the log."""
    products = [await shop.create_product() for _ in range(3)]
    for n in range(8):
        for product in products:
            await shop.update_product(product, price_cents=100 + n)
    await some_history(shop, size=2)


# -- the NATS relay ---------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def relay_app(
    template_database: str, names: StreamNames, **overrides: Any
) -> AsyncIterator[App]:
    try:
        async with projector_app(
            template_database,
            nats_url=NATS_URL,
            nats_stream=names.stream,
            nats_subject_prefix=names.prefix,
            **overrides,
        ) as app:
            yield app
    finally:
        await delete_stream(names.stream, NATS_URL)


def relay_of(app: App) -> NatsRelay:
    relay = app.consumer("nats:events")
    assert isinstance(relay, NatsRelay)
    return relay


@pytest.mark.nats
async def test_a_rewound_relay_publishes_again_and_the_stream_drops_them_within_its_window(
    template_database: str,
) -> None:
    """The running leader publishes every event after the position again; within the
    stream's duplicate window (600 s) JetStream drops each copy by its Nats-Msg-Id (the ack
    says duplicate): the stream still holds every event exactly once."""
    names = unique_stream()
    async with relay_app(template_database, names) as app:
        await long_history(Shop(app.pool))
        await below_the_horizon(app)
        relay = relay_of(app)
        seen = watch_commits(relay)
        total = len(await positions(app))
        async with running(app, relay):
            await caught_up(app, relay)
            before = await relay.checkpoint()
            to = (await positions(app))[total // 3]
            again = sum(1 for p in await positions(app) if p > to)
            dropped = duplicates()
            code, out, err = await rewind(app, ["nats:events"], to)
            assert code == 0, err
            said = re.match(
                rf"rewound nats:events from (\S+) to {to.to_checkpoint()}: "
                rf"{again} events will be applied again \(to stream {names.stream}",
                out,
            )
            # From where the relay was then: at least `before` (a following relay's
            # checkpoint moves on with the horizon, which other sessions move too).
            assert said is not None, out
            moved_from = Position.from_checkpoint(said.group(1))
            assert moved_from >= before, out

            async def republished() -> bool:
                return duplicates() - dropped >= again and await relay.checkpoint() >= before

            await eventually(republished, within=20)
        assert reloaded_at(seen, to), seen
        assert duplicates() - dropped == again  # every copy sent, each one dropped
        assert await stream_count(names.stream) == total
        await assert_exactly_once(app.pool, await read_stream(names.stream))
        # Where it was moved back from, for a relay that starts later (the fence).
        assert await pg_checkpoints.rewound(app.pool, "nats:events") == moved_from


@pytest.mark.nats
async def test_past_the_window_a_rewound_relay_appends_the_events_again(
    template_database: str,
) -> None:
    """Rewound while no relay runs, past the stream's duplicate window (1 s here): the relay
    started afterwards publishes the events after the position again although the stream
    holds them (its fence would otherwise skip them), appended after the originals with
    the same ids (at least once: subscribers de-duplicate on the event id)."""
    names = unique_stream()
    async with relay_app(template_database, names, nats_duplicate_window_s=1.0) as app:
        await long_history(Shop(app.pool))
        await below_the_horizon(app)
        relay = relay_of(app)
        async with running(app, relay):
            await caught_up(app, relay)
        everything = await positions(app)
        first = await read_stream(names.stream)
        assert len(first) == len(everything)
        to = everything[len(everything) // 2]
        after = [p for p in everything if p > to]
        await asyncio.sleep(1.5)  # the stream forgot the ids
        before = await relay.checkpoint()
        code, out, err = await rewind(app, ["nats:events"], to)
        assert code == 0 and f"{len(after)} events will be applied again" in out, err
        assert await relay.checkpoint() == to
        restarted = NatsRelay(
            app.pool,
            app.settings.nats_url,
            stream=names.stream,
            subject_prefix=names.prefix,
            duplicate_window_s=1.0,
        )
        try:
            async with running(app, restarted):
                await caught_up(app, restarted)
        finally:
            await restarted.aclose()
        relayed = await read_stream(names.stream)
        assert relayed[: len(first)] == first
        copies = relayed[len(first) :]
        assert [m.headers[h.POSITION] for m in copies] == [p.to_checkpoint() for p in after]
        assert [m.headers[h.MSG_ID] for m in copies] == [h.event_id(p.seq) for p in after]
        assert all(m.body["id"] == m.headers[h.EVENT_ID] for m in copies)

        # Past the rewound stretch the fence is the fence again: newer events whose
        # checkpoint was lost (a crash after publishing) are not published twice.
        shop = Shop(app.pool)
        for _ in range(5):
            await shop.create_product()
        await below_the_horizon(app)
        for attempt in ("follows", "restarted after a crash"):
            again = NatsRelay(app.pool, app.settings.nats_url, stream=names.stream,
                              subject_prefix=names.prefix, duplicate_window_s=1.0)  # fmt: skip
            try:
                async with running(app, again):
                    await caught_up(app, again)
            finally:
                await again.aclose()
            if attempt == "follows":
                published = await stream_count(names.stream)
                assert published > len(relayed)
                assert await pg_checkpoints.rewound(app.pool, "nats:events") == before
                await pg_checkpoints.write(app.pool, "nats:events", before)
                await asyncio.sleep(1.5)  # the window alone would let them in again
        assert await stream_count(names.stream) == published


# -- snapshots --------------------------------------------------------------------------------


async def test_rewound_snapshots_lose_the_rows_after_the_position_and_get_them_back_identical(
    template_database: str,
) -> None:
    async with projector_app(template_database, snapshot_every=3) as app:
        await long_history(Shop(app.pool))
        await below_the_horizon(app)
        writer = app.consumer("pg:snapshots")
        async with running(app, writer):
            await caught_up(app, writer)
        complete = await snapshot_rows(app)
        assert len(complete) >= 9
        everything = await positions(app)
        to = everything[len(everything) // 2]
        versions = {
            (str(r["aggregate_id"]), r["aggregate_version"]): Position(r["xid"], r["seq"])
            for r in await app.pool.fetch(
                "SELECT aggregate_id, aggregate_version, xid::text::bigint AS xid, seq FROM events"
            )
        }
        kept = [r for r in complete if versions[(r[0], r[1])] <= to]
        assert 0 < len(kept) < len(complete)
        before = await writer.checkpoint()

        # Rewound while nothing runs it: the rows after the position are gone.
        code, out, err = await rewind(app, ["pg:snapshots"], to)
        assert code == 0, err
        again = sum(1 for p in everything if p > to)
        assert out == (
            f"rewound pg:snapshots from {before.to_checkpoint()} to {to.to_checkpoint()}: "
            f"{again} events will be applied again ({len(complete) - len(kept)} snapshots "
            "deleted)\n"
        )
        assert await snapshot_rows(app) == kept
        assert await writer.checkpoint() == to

        # Following on writes them again, byte for byte.
        seen = watch_commits(writer)
        async with running(app, writer):
            await caught_up(app, writer)
            assert await snapshot_rows(app) == complete

            # Rewound while a leader runs: its next commit fails, it goes on from the origin.
            code, out, err = await rewind(app, ["pg:snapshots"], ORIGIN)
            assert code == 0 and f"({len(complete)} snapshots deleted)" in out, err
            await Shop(app.pool).create_product()  # something for it to commit

            async def back() -> bool:
                return reloaded_at(seen, ORIGIN) and await writer.checkpoint() >= before

            await eventually(back, within=20)
            await caught_up(app, writer)
        assert await snapshot_rows(app) == complete


# -- the webhook fan-out ----------------------------------------------------------------------


async def test_a_rewound_fanout_delivers_the_events_after_the_position_again(
    template_database: str,
) -> None:
    """Deliveries of the events after the position are sent again with the same webhook-id;
    a subscription created after the position gets none of the events before it, a disabled
    one nothing again."""
    fast = dict(
        webhooks_allow_private=True,
        webhooks_retry_initial_ms=30,
        webhooks_retry_max_ms=100,
        webhooks_timeout_ms=1000,
        gateway_retry_attempts=1,
    )
    async with Receiver() as r, projector_app(template_database, **fast) as app:
        service = command_service(app.pool, allow_private_webhooks=True)

        async def product(n: int) -> None:
            await service.execute(
                commands.CreateProduct(name=f"p{n}", price_cents=100, currency="EUR", stock=1)
            )

        async def subscribe(path: str) -> str:
            done = await service.execute(
                commands.CreateWebhookSubscription(url=r.url(path), event_types=("ProductCreated",))
            )
            return str(done.id)

        stop = asyncio.Event()
        task = asyncio.create_task(
            app.projector(["webhooks:fanout", "webhooks:dispatch"]).run(stop)
        )
        try:
            first = await subscribe("/first")
            gone = await subscribe("/gone")
            for n in range(3):
                await product(n)
            to = await last_event(app)
            await product(3)  # after the position, before the next subscription
            later = await subscribe("/later")
            await product(4)
            await r.wait_for(11, timeout=15)  # else gone's last ones stay unsent (disabled)
            await service.execute(commands.DisableWebhookSubscription(id=gone))
            await product(5)
            await r.wait_for(13, timeout=15)  # first: 6 products, gone: 5, later: 2

            async def all_delivered() -> bool:
                rows = await app.pool.fetch("SELECT status FROM webhooks.deliveries")
                return len(rows) == 13 and {x["status"] for x in rows} == {"DELIVERED"}

            await eventually(all_delivered, within=15)
            sent = {q.headers["webhook-id"]: q.path for q in r.requests}
            count = len(r.requests)
            fanout = app.consumer("webhooks:fanout")
            before = await fanout.checkpoint()
            seen = watch_commits(fanout)
            code, out, err = await rewind(app, ["webhooks:fanout"], to)
            assert code == 0, err
            # After the position: first's 3 products, later's 2; gone is disabled.
            assert out.startswith(f"rewound webhooks:fanout from {before.to_checkpoint()} ")
            assert "(5 deliveries queued again, each with its webhook-id)" in out
            await r.wait_for(count + 5, timeout=15)
            await product(6)  # something for the fan-out to commit
            await r.wait_for(count + 5 + 2, timeout=15)

            async def reloaded() -> bool:
                return reloaded_at(seen, to)

            await eventually(reloaded, within=10)
            await asyncio.sleep(0.3)  # nothing more comes
        finally:
            stop.set()
            await asyncio.wait_for(task, 10)
        assert len(r.requests) == count + 5 + 2
        again = r.requests[count : count + 5]
        assert {q.path for q in again} == {"/first", "/later"}
        assert all(sent[q.headers["webhook-id"]] == q.path for q in again)  # the same ids
        rows = await app.pool.fetch(
            "SELECT subscription_id::text AS sub, count(*) AS n FROM webhooks.deliveries GROUP BY 1"
        )
        # Going over the events again made no delivery: later has none from before it.
        assert {x["sub"]: x["n"] for x in rows} == {first: 7, gone: 5, later: 3}


# -- refusals ---------------------------------------------------------------------------------


async def state(app: App) -> tuple[Any, ...]:
    checkpoints = await app.pool.fetch(
        "SELECT projection, xid, seq FROM read.projection_checkpoints ORDER BY 1"
    )
    return tuple(map(tuple, checkpoints)), tuple(await snapshot_rows(app))


async def test_refusals_change_nothing(template_database: str) -> None:
    async with projector_app(template_database, snapshot_every=2, payments_url="memory:") as app:
        await some_history(Shop(app.pool), size=2)
        await below_the_horizon(app)
        for name in ("pg:snapshots", "pg:products", "pg:analytics", "webhooks:fanout"):
            consumer = app.consumer(name)
            if consumer.rebuildable:
                await rebuild_one(consumer, app.pool, 50)
            else:
                async with running(app, consumer):
                    await caught_up(app, consumer)
        middle = (await positions(app))[5]
        before = await state(app)

        cases = {
            "pg:products": "pg:products cannot be rewound: it holds only the state at its "
            "checkpoint (one document per aggregate), not what it was before; use `cqrs "
            "projector rebuild --only products` (from the origin)",
            "redis:orders": "use `cqrs projector rebuild --only orders` (from the origin)",
            "pg:analytics": "pg:analytics cannot be rewound: a fold (counts and sums",
            "payments:process": "payments:process cannot be rewound: every request up to its "
            "checkpoint is settled",
            "nope:nothing": "unknown consumer 'nope:nothing'; expected one of [",
            "redis:orders#1/4": "redis:orders#1/4 is a segment of redis:orders: segments are "
            "not rewound",
        }
        for name, expected in cases.items():
            # Alone, and beside one that could be rewound: all or nothing.
            for names in ([name], ["pg:snapshots", name]):
                code, out, err = await rewind(app, names, middle)
                assert (code, out) == (2, ""), (name, out)
                assert err.count("\n") == 1 and expected in err, err
        # Ahead of the checkpoint: that would skip events.
        snapshots = await app.consumer("pg:snapshots").checkpoint()
        ahead = Position(snapshots.xid, snapshots.seq + 1)
        code, out, err = await rewind(app, ["webhooks:fanout", "pg:snapshots"], ahead)
        assert (code, out) == (2, "")
        assert f"pg:snapshots: {ahead.to_checkpoint()} is ahead of its checkpoint" in err
        assert "(a rewind never skips events)" in err
        assert await state(app) == before


# -- the command ------------------------------------------------------------------------------


async def cqrs(settings: Settings, *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cqrs", "projector", "rebuild", *args, cwd=ROOT,
        env=env_for(settings, CQRS_LOG_LEVEL="WARNING"),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_the_command_its_errors_and_exit_codes(template_database: str) -> None:
    async with projector_app(template_database, snapshot_every=2) as app:
        await some_history(Shop(app.pool), size=2)
        await below_the_horizon(app)
        writer = app.consumer("pg:snapshots")
        async with running(app, writer):
            await caught_up(app, writer)
        at = await writer.checkpoint()
        settings = app.settings
        to = (await positions(app))[4]

        # Options that do not go together: argparse's usage and error, 2.
        for args, message in (
            (["--from", "origin"], "--from needs --consumer NAME"),
            (["--consumer", "pg:snapshots"], "--consumer goes with --from POSITION"),
            (["--from", "origin", "--consumer", "pg:snapshots", "--only", "products"],
             "--from and --only do not go together"),
        ):  # fmt: skip
            code, out, err = await cqrs(settings, *args)
            assert code == 2 and out == "", err
            assert "usage: cqrs projector rebuild" in err and message in err, err
        # Not a position: one line, 2.
        for bad in ("yesterday", "c1.XYZ.1", "12:", "1:2:3", "c1.00.1"):
            code, out, err = await cqrs(settings, "--from", bad, "--consumer", "pg:snapshots")
            assert (code, out) == (2, ""), err
            assert err.count("\n") == 1 and "is not a position: expected a consistency token" in err
        # Refused: one line, 2.
        code, out, err = await cqrs(settings, "--from", "origin", "--consumer", "pg:orders")
        assert (code, out) == (2, "") and err.count("\n") == 1, err
        assert "use `cqrs projector rebuild --only orders` (from the origin)" in err
        code, out, err = await cqrs(settings, "--from", "origin", "--consumer", "nats:events")
        assert (code, out) == (2, "") and "unknown consumer 'nats:events'" in err, err
        await pg_checkpoints.ensure(app.pool, "nats:events")  # a relay runs elsewhere
        code, out, err = await cqrs(settings, "--from", "origin", "--consumer", "nats:events")
        assert (code, out) == (2, "") and "not configured in this shell" in err, err
        assert await writer.checkpoint() == at

        # A consistency token, a checkpoint as status prints it, the origin.
        for position, shown in (
            (encode_token(to), to),
            (to.to_checkpoint(), to),
            ("origin", ORIGIN),
        ):
            await pg_checkpoints.write(app.pool, "pg:snapshots", at)
            code, out, err = await cqrs(settings, "--from", position, "--consumer", "pg:snapshots")
            assert code == 0, err
            assert out.startswith(
                f"rewound pg:snapshots from {at.to_checkpoint()} to {shown.to_checkpoint()}: "
            ), out
            assert await writer.checkpoint() == shown
