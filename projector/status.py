"""``cqrs projector status``: checkpoint, events behind, leading process (``host/pid``,
``-`` when none leads it) and state of every consumer: those this process's settings
configure, then any other with a checkpoint in the database (e.g. ``payments:process`` seen
from a shell without ``CQRS_PAYMENTS_URL``)."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TextIO

import asyncpg

from common.event_log import COUNT_CAP
from common.projection_checkpoints import pg_checkpoints
from projector.audit_record import AuditRecord, status_line
from projector.consumer import Consumer
from projector.errors import StoreLost
from projector.failures import FailureLog
from projector.leadership import leaders
from projector.outbox import count_after
from projector.parking import ParkedBook
from projector.projection import segments_of


async def status(
    consumers: Sequence[Consumer],
    pool: asyncpg.Pool,
    failures: FailureLog,
    *,
    out: TextIO | None = None,
    audits: AuditRecord | None = None,
    parked: ParkedBook | None = None,
) -> int:
    """Print one line per consumer; 1 if any is stopped on a failure, else 0. With
    ``audits``, then one line per consumer the continuous audit has looked at (drifts found
    since it began, the last one's id: :mod:`projector.audit_record`). With ``parked``, a
    line per consumer with parked aggregates (:mod:`projector.parking`)."""
    out = out if out is not None else sys.stdout
    stopped = await failures.all()
    # A split projection: its line (the lowest checkpoint of its segments, what readers
    # see), then one per segment, each with its own leader.
    shown_all = [part for c in consumers for part in (c, *segments_of(c))]
    led = await leaders(pool, [c.name for c in shown_all])
    print(
        f"{'projection':<22} {'checkpoint (xid:seq)':<42} {'behind':>8}  {'leader':<24} state",
        file=out,
    )
    for consumer in shown_all:
        try:
            checkpoint = await consumer.checkpoint()
            state = f"ok ({await consumer.describe()})"
        except StoreLost as exc:
            checkpoint, state = None, f"not built yet ({exc.why})"
        shown_checkpoint = checkpoint.to_checkpoint() if checkpoint else "-"
        behind = (
            await count_after(pool, checkpoint, consumer.consumes, COUNT_CAP, consumer.event_types)
            if checkpoint
            else None
        )
        failure = stopped.get(consumer.name)
        if failure is not None:
            state = (
                f"STOPPED at event seq={failure.event_seq} ({failure.event_type}) since "
                f"{failure.failed_at.isoformat(timespec='seconds')}: {failure.error}"
            )
        shown = "-" if behind is None else f">={behind}" if behind >= COUNT_CAP else str(behind)
        leader = led.get(consumer.name, "-")
        if segments_of(consumer):
            leader = "(segments)"
        print(
            f"{consumer.name:<22} {shown_checkpoint:<42} {shown:>8}  {leader:<24} {state}",
            file=out,
        )
    # Consumers this shell's settings do not configure (payments without CQRS_PAYMENTS_URL,
    # the relay without CQRS_NATS_URL, ...) still stand somewhere: their rows say where.
    elsewhere = {
        name: at
        for name, at in (await pg_checkpoints(pool)).items()
        if name not in {c.name for c in shown_all}
    }
    elsewhere_led = await leaders(pool, list(elsewhere))
    for name, at in sorted(elsewhere.items()):
        failure = stopped.get(name)
        state = (
            f"STOPPED at event seq={failure.event_seq} ({failure.event_type}): {failure.error}"
            if failure is not None
            else "not configured in this shell (its settings are not set here)"
        )
        leader = elsewhere_led.get(name, "-")
        print(f"{name:<22} {at.to_checkpoint():<42} {'-':>8}  {leader:<24} {state}", file=out)
    if audits is not None:
        for name, fields in (await audits.read(c.name for c in shown_all)).items():
            print(status_line(name, fields), file=out)
    if parked is not None:
        by_consumer: dict[str, int] = {}
        for p in await parked.all():
            by_consumer[p.consumer] = by_consumer.get(p.consumer, 0) + 1
        for name, count in sorted(by_consumer.items()):
            print(
                f"{name:<22} PARKED: {count} aggregate(s) set aside (`cqrs projector parked`)",
                file=out,
            )
    return 1 if stopped else 0
