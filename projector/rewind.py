"""Rewinding a consumer: ``cqrs projector rebuild --from POSITION --consumer NAME``.

A rebuild replays the whole log into a new copy; a rewind moves one consumer's checkpoint
back to a position so that it applies the events after it again, in place. Only a consumer
that can take its own state back to that position can be rewound; it says so by having a
:meth:`Rewindable.rewind` method, which in ONE PostgreSQL transaction locks its checkpoint
row, undoes what it did after the position and moves the checkpoint there:

- ``nats:events`` (the relay) publishes those events again (its fence lets them through:
  :mod:`projector.relay.nats_relay`);
- ``webhooks:fanout`` queues again the deliveries it made for them (same ``webhook-id``);
- ``pg:snapshots`` deletes the snapshots of those events and writes them again.

The others are refused, nothing changed: a projection holds only the state at its checkpoint
(rebuild it), ``pg:analytics`` is a fold that cannot take events out, ``payments:process``
skips what is settled (a rewind would change nothing).

The running leader (a ``cqrs projector run`` anywhere) needs no signal: its next commit's
compare-and-set on the checkpoint row fails (``CheckpointMoved``), it reloads the checkpoint
and goes on from the rewound position (:mod:`projector.runner`); a NOTIFY wakes it at once.
The rewind holds the consumer's rebuild lock, so it never races a rebuild or another rewind.
"""

from __future__ import annotations

import contextlib
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, TextIO, runtime_checkable

import asyncpg

from common.events import NOTIFY_CHANNEL
from common.positions import MAX_POSITION_VALUE, ORIGIN, InvalidToken, Position, decode_token
from projector.consumer import Consumer
from projector.errors import RewindRefused
from projector.rebuild import rebuild_lock
from projector.segments import base_name

_CHECKPOINT = re.compile(r"(\d{1,20}):(\d{1,20})")

# A consumer's events in (after, until]: $1,$2 after; $3,$4 until; $5 aggregate types;
# $6 event types (NULL: all). Everything up to a checkpoint is committed.
_BETWEEN = """
SELECT count(*) FROM events v
WHERE (v.xid, v.seq) > ($1::bigint::text::xid8, $2::bigint)
  AND (v.xid, v.seq) <= ($3::bigint::text::xid8, $4::bigint)
  AND v.aggregate_type = ANY($5::text[]) AND ($6::text[] IS NULL OR v.event_type = ANY($6::text[]))
"""


@dataclass(frozen=True, slots=True)
class Rewound:
    """What a rewind did."""

    previous: Position  # the checkpoint it moved back from
    detail: str = ""  # what else it undid, e.g. "3 snapshots deleted"


@runtime_checkable
class Rewindable(Protocol):
    """A consumer that can be rewound."""

    async def rewind(self, to: Position) -> Rewound:
        """In one transaction: lock the checkpoint row, undo what was done after ``to``,
        move the checkpoint to ``to``. :class:`RewindRefused` (nothing changed) if ``to``
        is ahead of the checkpoint."""
        ...


def parse_position(text: str) -> Position:
    """``--from``: a consistency token (``c1.<hex>.<hex>``), a checkpoint (``xid:seq``) or
    ``origin``; ``ValueError`` (one line) for anything else."""
    text = text.strip()
    if text.lower() == "origin":
        return ORIGIN
    if text.startswith("c1."):
        with contextlib.suppress(InvalidToken):
            if (token := decode_token(text)) is not None:
                return token
    elif (match := _CHECKPOINT.fullmatch(text)) is not None:
        position = Position(int(match[1]), int(match[2]))
        if max(position) <= MAX_POSITION_VALUE:
            return position
    raise ValueError(
        f"--from {text[:60]!r} is not a position: expected a consistency token "
        "(c1.<hex>.<hex>, as command replies carry), a checkpoint (xid:seq, as `cqrs "
        "projector status` prints) or origin"
    )


def refusal(consumer: Consumer) -> str | None:
    """Why ``consumer`` cannot be rewound (one line), ``None`` if it can."""
    if isinstance(consumer, Rewindable):
        return None
    why: str | None = getattr(consumer, "not_rewound_because", None)
    if why is None and consumer.rebuildable:
        family = consumer.name.partition(":")[2]
        why = (
            "it holds only the state at its checkpoint (one document per aggregate), not what "
            f"it was before; use `cqrs projector rebuild --only {family}` (from the origin)"
        )
    return f"{consumer.name} cannot be rewound: {why or 'it cannot undo what it did'}"


def choose(consumers: Sequence[Consumer], names: Sequence[str]) -> tuple[list[Consumer], list[str]]:
    """The consumers named (each once) and a line for every name refused."""
    by_name = {c.name: c for c in consumers}
    chosen: list[Consumer] = []
    refused: list[str] = []
    for name in dict.fromkeys(names):
        if base_name(name) != name:
            refused.append(
                f"{name} is a segment of {base_name(name)}: segments are not rewound (the "
                "consumers that can be, nats:events, webhooks:fanout and pg:snapshots, are "
                "never split)"
            )
        elif name not in by_name:
            refused.append(f"unknown consumer {name!r}; expected one of {sorted(by_name)}")
        elif (why := refusal(by_name[name])) is not None:
            refused.append(why)
        else:
            chosen.append(by_name[name])
    return chosen, refused


async def events_between(
    db: asyncpg.Pool, consumer: Consumer, after: Position, until: Position
) -> int:
    """How many of ``consumer``'s events lie in ``(after, until]``."""
    types = None if consumer.event_types is None else list(consumer.event_types)
    return int(
        await db.fetchval(
            _BETWEEN, after.xid, after.seq, until.xid, until.seq, list(consumer.consumes), types
        )
    )


async def rewind(
    consumers: Sequence[Consumer],
    names: Sequence[str],
    to: Position,
    pool: asyncpg.Pool,
    *,
    dsn: str,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Rewind the consumers ``names`` (of ``consumers``) to ``to``: each applies the events
    after ``to`` again. All or nothing up front: an unknown or unrewindable name, or ``to``
    ahead of a checkpoint, is refused (one line each on ``err``, exit status 2) before
    anything changes; another rebuild or rewind of one of them running: 1. Each rewind prints
    ``rewound NAME from OLD to NEW: N events will be applied again (...)``; 0."""
    out = out if out is not None else sys.stdout
    err = err if err is not None else sys.stderr
    chosen, refused = choose(consumers, names)
    if refused:
        for line in refused:
            print(f"cqrs projector rebuild: {line}", file=err)
        return 2
    async with contextlib.AsyncExitStack() as locks:
        for consumer in chosen:
            if not await locks.enter_async_context(rebuild_lock(dsn, consumer.name)):
                print(
                    f"cqrs projector rebuild: {consumer.name}: another rebuild or rewind of it "
                    "is running",
                    file=err,
                )
                return 1
        # Under the locks only a rewind moves a checkpoint back: checked once for all.
        ahead = []
        for consumer in chosen:
            at = await consumer.checkpoint()
            if to > at:
                ahead.append(
                    f"{consumer.name}: {to.to_checkpoint()} is ahead of its checkpoint "
                    f"{at.to_checkpoint()} (a rewind never skips events)"
                )
        if ahead:
            for line in ahead:
                print(f"cqrs projector rebuild: {line}", file=err)
            return 2
        for consumer in chosen:
            assert isinstance(consumer, Rewindable)
            try:
                done = await consumer.rewind(to)
            except RewindRefused as exc:
                print(f"cqrs projector rebuild: {exc}", file=err)
                return 2
            # A hint: a leader waiting for its poll interval looks at once (and finds out).
            await pool.execute("SELECT pg_notify($1, '')", NOTIFY_CHANNEL)
            again = await events_between(pool, consumer, to, done.previous)
            detail = f" ({done.detail})" if done.detail else ""
            print(
                f"rewound {consumer.name} from {done.previous.to_checkpoint()} to "
                f"{to.to_checkpoint()}: {again} events will be applied again{detail}",
                file=out,
            )
    return 0
