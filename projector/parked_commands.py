"""``cqrs projector parked`` and ``cqrs projector unpark`` (:mod:`projector.parking`)."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Sequence
from typing import TextIO

from projector.parking import Parked, ParkedBook

_POLL_S = 0.2


def print_parked(parked: Sequence[Parked], out: TextIO) -> None:
    """One line per parked aggregate, then its reason (and why an unpark was refused)."""
    if not parked:
        print("no parked aggregates", file=out)
        return
    print(f"{'consumer':<16} {'aggregate':<46} {'since':<34} parked at", file=out)
    for p in parked:
        since = f"seq={p.since.seq} {p.event_type} v{p.event_version}"
        state = " (unpark requested)" if p.unpark_requested else ""
        print(
            f"{p.consumer:<16} {p.aggregate_type + ' ' + p.aggregate_id:<46} {since:<34} "
            f"{p.parked_at.isoformat(timespec='seconds')}{state}",
            file=out,
        )
        print(f"    why: {p.error}", file=out)
        if p.released:
            print(f"    replayed by: {', '.join(p.released)}", file=out)
        if p.unpark_error:
            print(f"    unpark refused: {p.unpark_error}", file=out)


async def parked(book: ParkedBook, out: TextIO | None = None) -> int:
    """Print every parked aggregate; 1 if there is any (a script can alert on it)."""
    rows = await book.all()
    print_parked(rows, out if out is not None else sys.stdout)
    return 1 if rows else 0


async def unpark(
    book: ParkedBook,
    consumer: str,
    aggregate_id: str | None,
    *,
    wait_s: float,
    out: TextIO | None = None,
) -> int:
    """Ask the running projector to replay ``consumer``'s parked aggregates (or the one
    given), then wait up to ``wait_s`` for the outcome. 0: every one replayed; 1: one
    was refused again or is still waiting (no projector running it?); 2: nothing parked."""
    out = out if out is not None else sys.stdout
    asked = await book.request_unpark(consumer, aggregate_id)
    what = consumer if aggregate_id is None else f"{consumer} {aggregate_id}"
    if asked == 0:
        print(f"cqrs projector unpark: nothing parked for {what}", file=sys.stderr)
        return 2
    print(f"unpark requested for {asked} aggregate(s) of {what}", file=out)
    if wait_s <= 0:
        return 0
    deadline = time.monotonic() + wait_s
    while True:
        rows = [
            p
            for p in (await book.of(consumer)).values()
            if aggregate_id is None or p.aggregate_id == aggregate_id
        ]
        pending = [p for p in rows if p.unpark_requested]
        if not pending or time.monotonic() >= deadline:
            break
        await asyncio.sleep(_POLL_S)
    refused = [p for p in rows if p.unpark_error]
    replayed = asked - len(rows)
    print(f"replayed: {replayed}, refused: {len(refused)}, waiting: {len(pending)}", file=out)
    if refused or pending:
        print_parked(rows, out)
    if pending:
        print(
            f"still waiting after {wait_s:.0f}s: is `cqrs projector run` running {consumer}?",
            file=out,
        )
    return 0 if not rows else 1
