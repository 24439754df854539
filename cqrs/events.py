"""``cqrs events tail`` and ``cqrs events show``: the event log on a terminal.

Both read the ``events`` table through ``common.event_log`` (payloads upcast to the
current schema, as the read server's history shows them). ``tail --follow`` reads in
the projector's commit-safe order (below the snapshot's xmin, by ``(xid, seq)``), so
it never skips an event that commits after a later one; the write side's NOTIFY wakes
it early, a poll every half second is the truth.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TextIO

import asyncpg

from common import events as ev
from common.event_log import LoggedEvent, TailFilter, after, history_page, newest
from common.settings import Settings

POLL_S = 0.5
FOLLOW_BATCH = 500
SHOW_PAGE = 1000
_TYPES = (*ev.SCHEMA_VERSIONS, ev.PRODUCT, ev.CUSTOMER, ev.ORDER)


class UsageError(ValueError):
    """A bad argument: printed, exit status 2."""


@dataclass(frozen=True, slots=True)
class TailArgs:
    follow: bool = False
    type: str | None = None
    aggregate: str | None = None
    limit: int = 20


def parse_filter(type_: str | None, aggregate: str | None) -> TailFilter:
    """The filter of ``--type``/``--aggregate``: a type's case is forgiven, an id must be a UUID."""
    canonical = None
    if type_:
        matches = [t for t in _TYPES if t.lower() == type_.lower()]
        if not matches:
            raise UsageError(f"--type: unknown type {type_!r}; expected one of {', '.join(_TYPES)}")
        canonical = matches[0]
    ident = None
    if aggregate:
        try:
            ident = str(uuid.UUID(aggregate))
        except ValueError as exc:
            raise UsageError(f"--aggregate: {aggregate!r} is not a UUID") from exc
    return TailFilter(canonical, ident)


def tail_line(logged: LoggedEvent) -> str:
    """seq, occurred_at, aggregate type/id, version, event type, compact payload JSON."""
    e = logged.event
    return (
        f"{e.seq:>10}  {iso(e.occurred_at)}  {e.aggregate_type}/{e.aggregate_id}  "
        f"v{e.aggregate_version}  {e.event_type}  {logged.payload_json()}"
    )


def show_lines(logged: LoggedEvent) -> list[str]:
    """One event of ``cqrs events show``: a header with its metadata, then its payload."""
    e = logged.event
    meta = " ".join(f"{k}={_meta(v)}" for k, v in sorted(logged.metadata.items()))
    schema = f"schema v{logged.schema_version}"
    header = f"v{e.aggregate_version}  {iso(e.occurred_at)}  seq {e.seq}  {e.event_type}  {schema}"
    return [f"{header}  {meta}".rstrip(), f"    {logged.payload_json()}"]


async def tail(settings: Settings, args: TailArgs, out: TextIO | None = None) -> int:
    """Print the newest ``args.limit`` events, then (``follow``) new ones as they commit."""
    out = out if out is not None else sys.stdout
    try:
        where = parse_filter(args.type, args.aggregate)
        if args.limit < 0:
            raise UsageError("--limit must be >= 0")
    except UsageError as exc:
        print(f"cqrs events tail: {exc}", file=sys.stderr)
        return 2
    conn = await asyncpg.connect(settings.asyncpg_dsn)
    try:
        wake = asyncio.Event()
        if args.follow:
            # Before the first read: a commit in between wakes the first wait at once.
            await conn.add_listener(ev.NOTIFY_CHANNEL, lambda *_: wake.set())
        start = await newest(conn, where, args.limit)
        _print(out, [tail_line(e) for e in start.events])
        position = start.next
        while args.follow:
            wake.clear()
            batch = await after(conn, position, where, FOLLOW_BATCH)
            _print(out, [tail_line(e) for e in batch.events])
            position = batch.next
            if len(batch.events) < FOLLOW_BATCH:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(POLL_S):
                        await wake.wait()
    finally:
        await conn.close()
    return 0


async def show(settings: Settings, aggregate: str, out: TextIO | None = None) -> int:
    """Print one aggregate's history (every event, with metadata), oldest first."""
    out = out if out is not None else sys.stdout
    try:
        ident = str(uuid.UUID(aggregate))
    except ValueError:
        print(f"cqrs events show: {aggregate!r} is not a UUID", file=sys.stderr)
        return 2
    conn = await asyncpg.connect(settings.asyncpg_dsn)
    try:
        last, shown = 0, 0
        while True:
            page = await history_page(conn, ident, None, last, SHOW_PAGE)
            if page and not shown:
                print(f"{page[0].event.aggregate_type} {ident}", file=out)
            for logged in page:
                _print(out, show_lines(logged))
            shown += len(page)
            if len(page) < SHOW_PAGE:
                break
            last = page[-1].event.aggregate_version
    finally:
        await conn.close()
    if not shown:
        print(f"cqrs events show: no events for aggregate {ident}", file=sys.stderr)
        return 1
    return 0


def iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _meta(value: Any) -> str:
    text = str(value)
    return f'"{text}"' if not text or any(c.isspace() for c in text) else text


def _print(out: TextIO, lines: list[str]) -> None:
    if lines:
        out.write("".join(f"{line}\n" for line in lines))
        out.flush()  # followed through a pipe: each batch as it comes
