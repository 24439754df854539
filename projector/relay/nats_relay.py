"""``nats:events``: every event of the log, exactly once, on a NATS JetStream stream.

A consumer of the event log like the projections (docs/ARCHITECTURE.md, "Adding a
consumer"), with a checkpoint row of its own in ``read.projection_checkpoints``.

One batch:

1. compare the stored checkpoint with ``batch.start`` (``CheckpointMoved`` otherwise:
   another runner got in) and read the batch's ``metadata`` (one query);
2. publish every event in log order on one connection, pipelined: each message carries a
   reply subject under one wildcard inbox subscription that collects the stream's acks,
   so the whole batch is on the wire before the first ack is awaited;
3. wait (bounded) for every ack; a missing or negative one fails the whole batch;
4. move the checkpoint ``batch.start -> batch.next`` (one compare-and-set statement).

Exactly once. A batch that failed after some of its messages were stored is retried
from the same checkpoint. Its messages carry ``Nats-Msg-Id`` (the event id), so the
stream drops a re-publish within its duplicate window; but a relay down for longer than
that window would duplicate. So before publishing, whenever it (re)starts following
(first batch after construction, and after any failure), the relay reads the last message
on its subjects from the stream and skips the events at or below its ``Cqrs-Position``
header (the *fence*). Messages of a batch are stored in the order sent (one connection),
so everything before that message was stored too. After a failure in this process the
fence is at most where the acks stopped being contiguous, so a message the stream
refused is re-published even if later ones were stored (those are then duplicates the
window drops). Per-aggregate order is the log's order, which is publish order.

Rewinding (:meth:`NatsRelay.rewind`, ``cqrs projector rebuild --from``) publishes the events
after a position again, on purpose: in the transaction that moves the checkpoint back it
records where from (the row ``nats:events#rewound``, the highest such checkpoint), and the
fence skips no event up to there, although the stream holds it (a running leader finds
out by its compare-and-set failing, then reads the fence again; a relay started later reads
the row with the fence). The copies carry the same ``Nats-Msg-Id``: within the stream's
duplicate window JetStream drops them (the ack says ``duplicate``), later they are
appended again, after the newer events (at least once; subscribers de-duplicate on the
event id).

Failures. Anything that means NATS cannot serve now (no connection, timeouts, no
responders, JetStream unavailable or out of resources) is raised as
:class:`RelayUnavailable`, a ``ConnectionError``, which ``common.outages`` counts as an
outage: the runner backs off and retries. An event that cannot be published at all (a
message bigger than the server or stream accepts, a payload the reader could not
upcast) is a poison event. A relay has nothing to rebuild: it never raises
``StoreLost``; a missing checkpoint row is created at the origin (the whole history is
published, the fence skipping what the stream already holds).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import nats
import nats.errors
import nats.js.errors
import orjson
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js.api import StreamConfig

from common.event_log import parse_json
from common.events import AGGREGATE_TYPES, UNREADABLE_PAYLOAD, StoredEvent
from common.metrics import RELAY_DUPLICATES, RELAY_PUBLISHED
from common.positions import Position
from projector.errors import CheckpointMoved, PoisonEvent
from projector.outbound import Outbound
from projector.outbox import Batch
from projector.relay import headers as h
from projector.rewind import Rewound
from projector.stores import pg_checkpoints

log = logging.getLogger(__name__)

NAME = "nats:events"
DEFAULT_STREAM = "SHOP_EVENTS"
DEFAULT_PREFIX = "shop.events"
# NATS' own default is 2 minutes. The window only backs up the fence (which does not
# depend on it); a longer one covers more of the cases the fence cannot see (a second,
# stale leader publishing the same batch) at the cost of the server keeping one id per
# message published in the window: 10 minutes at 10,000 events/s is 6 million ids (a few
# hundred MB); lower it for such rates.
DEFAULT_DUPLICATE_WINDOW_S = 600.0
ACK_TIMEOUT_S = 10.0  # every ack of a batch within this (an outage otherwise)
CONNECT_TIMEOUT_S = 2.0  # a first connection within this (an outage otherwise)
REQUEST_TIMEOUT_S = 5.0  # JetStream API calls (stream info, last message)

_EXTRA = "SELECT seq, metadata::text AS metadata, schema_version FROM events WHERE seq = ANY($1)"
# JetStream API error codes that mean "cannot serve now", not "this message is wrong".
_UNAVAILABLE_CODES = (500, 503, 504)
_UNAVAILABLE_ERR_CODES = (
    10023,  # insufficient resources
    10039,  # JetStream not enabled for account
    10047,  # insufficient storage resources
    10076,  # JetStream not enabled
    10077,  # maximum messages exceeded (discard new)
    10028,  # maximum bytes exceeded (discard new)
)


class RelayUnavailable(ConnectionError):
    """NATS (or its JetStream) cannot serve now; an outage (``common.outages``)."""


def unavailable(exc: BaseException) -> bool:
    """Whether a nats-py exception means the server cannot serve now."""
    if isinstance(exc, nats.js.errors.APIError):
        return exc.code in _UNAVAILABLE_CODES or exc.err_code in _UNAVAILABLE_ERR_CODES
    return isinstance(
        exc,
        (
            nats.errors.ConnectionClosedError,
            nats.errors.TimeoutError,  # FlushTimeout, DrainTimeout too
            nats.errors.NoServersError,
            nats.errors.NoRespondersError,
            nats.errors.StaleConnectionError,
            nats.errors.OutboundBufferLimitError,
            nats.errors.ConnectionDrainingError,
            nats.errors.ConnectionReconnectingError,
            nats.errors.SlowConsumerError,
            nats.js.errors.NoStreamResponseError,
            asyncio.TimeoutError,
            OSError,
        ),
    )


@contextlib.contextmanager
def _as_outage(what: str) -> Iterator[None]:
    """nats-py's "cannot serve now" errors as :class:`RelayUnavailable`."""
    try:
        yield
    except RelayUnavailable:
        raise
    except Exception as exc:
        if unavailable(exc):
            raise RelayUnavailable(
                f"NATS unavailable ({what}): {type(exc).__name__} {exc}"
            ) from exc
        raise


def covers(pattern: str, subject: str) -> bool:
    """Whether the subject filter ``pattern`` matches every subject ``subject`` (which may
    hold wildcards itself) matches."""
    want, got = pattern.split("."), subject.split(".")
    for i, token in enumerate(want):
        if token == ">":
            return len(got) > i
        if i >= len(got):
            return False
        if token == "*":
            if got[i] == ">":
                return False
        elif token != got[i]:
            return False
    return len(got) == len(want)


@dataclass
class _Acks:
    """The acks of one batch in flight, by index."""

    batch: int
    expected: int
    results: list[dict[str, Any] | BaseException | None]
    received: int = 0
    done: asyncio.Event = field(default_factory=asyncio.Event)


class NatsRelay(Outbound):
    """Publishes every event of the log to a JetStream stream, exactly once."""

    not_rebuilt_because = (
        "what it published stays published (reset its checkpoint row to re-publish: the "
        "stream drops what it holds)"
    )

    def __init__(
        self,
        pool: asyncpg.Pool,
        url: str,
        *,
        stream: str = DEFAULT_STREAM,
        subject_prefix: str = DEFAULT_PREFIX,
        duplicate_window_s: float = DEFAULT_DUPLICATE_WINDOW_S,
        ack_timeout_s: float = ACK_TIMEOUT_S,
        name: str = NAME,
    ) -> None:
        self._pool = pool
        self._url = url
        self.stream = stream
        self.prefix = subject_prefix.rstrip(".")
        self._window_s = duplicate_window_s
        self._ack_timeout_s = ack_timeout_s
        self._name = name
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._sub: Subscription | None = None
        self._inbox = ""
        self._connecting: asyncio.Lock | None = None
        self._stream_ready = False
        self._max_message = 0  # bytes; the smaller of the server's and the stream's limits
        self._fenced = False  # False: read the fence before the next batch
        self._fence: Position | None = None  # the stream holds the events up to here
        self._replay: Position | None = None  # rewound: publish up to here whatever the fence
        self._sure: Position | None = None  # contiguously acked up to here (after a failure)
        self._batches = 0
        self._acks: _Acks | None = None
        self._closing = False
        self._published = RELAY_PUBLISHED.labels(name)
        self._duplicates = RELAY_DUPLICATES.labels(name)

    # -- the port ---------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._name

    @property
    def consumes(self) -> tuple[str, ...]:
        return AGGREGATE_TYPES

    @property
    def event_types(self) -> tuple[str, ...] | None:
        return None

    async def apply(self, batch: Batch) -> None:
        try:
            await self._apply(batch)
        except BaseException:
            self._fenced = False  # whatever happened, read the stream again first
            raise
        self._sure = None

    async def rewind(self, to: Position) -> Rewound:
        """Publish the events after ``to`` again: in one transaction, move the checkpoint
        back to ``to`` and record where from, so the fence lets them through (see the
        module's docstring); only PostgreSQL is touched."""
        async with self._pool.acquire() as conn, conn.transaction():
            previous = await pg_checkpoints.move_back(conn, self._name, to)
            await pg_checkpoints.record_rewound(conn, self._name, previous)
        return Rewound(
            previous,
            f"to stream {self.stream}, which drops a copy whose Nats-Msg-Id it saw within "
            "its duplicate window",
        )

    async def describe(self) -> str:
        if self._nc is not None and not self._nc.is_connected:
            return f"stream {self.stream}: NATS unreachable (reconnecting)"
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT_S):
                js = await self._jetstream()
                info = await js.stream_info(self.stream)
        except nats.js.errors.NotFoundError:
            return f"stream {self.stream} not created yet (the first batch creates it)"
        except Exception as exc:
            return f"stream {self.stream}: NATS unreachable ({type(exc).__name__})"
        return f"stream {self.stream} ({info.state.messages} msgs)"

    async def aclose(self) -> None:
        """Close the connection (the App calls it on shutdown)."""
        nc, self._nc, self._js, self._sub = self._nc, None, None, None
        self._closing = True
        self._stream_ready = False
        self._fenced = False
        if nc is not None and not nc.is_closed:
            with contextlib.suppress(Exception):
                await nc.close()

    close = aclose

    # -- one batch --------------------------------------------------------------------------

    async def _apply(self, batch: Batch) -> None:
        start = time.perf_counter()
        events = batch.events
        if events:
            found = await pg_checkpoints.read(self._pool, self._name)
            if found != batch.start:
                raise CheckpointMoved(batch.start, found, "(before publishing)")
            if not self._fenced:
                fence = await self._read_fence()
                if self._sure is not None and fence is not None:
                    fence = min(fence, max(self._sure, batch.start))
                self._sure = None
                replay = await pg_checkpoints.rewound(self._pool, self._name)
                if replay is not None and replay > batch.start:
                    log.info(
                        "%s: rewound: publishing the events up to %s again",
                        self._name,
                        replay.to_checkpoint(),
                    )
                self._fence, self._replay, self._fenced = fence, replay, True
            fence, replay = self._fence, self._replay
            if fence is not None:
                kept = [
                    e
                    for e in events
                    if e.position > fence or (replay is not None and e.position <= replay)
                ]
                if skipped := len(events) - len(kept):
                    log.info(
                        "%s: the stream already holds %d events of this batch (up to %s)",
                        self._name,
                        skipped,
                        fence.to_checkpoint(),
                    )
                    events = kept
                if events and events[-1].position > fence:
                    self._fence = None  # past it: every later event is new to the stream
            if events:
                await self._publish(batch, events)
        await self._commit(batch)
        log.debug("%s: %d events in %.3fs", self._name, len(events), time.perf_counter() - start)

    async def _commit(self, batch: Batch) -> None:
        await self._advance(self._pool, batch)

    async def _publish(self, batch: Batch, events: Sequence[StoredEvent]) -> None:
        extras = await self._extras(events)
        messages = []
        for event in events:
            if UNREADABLE_PAYLOAD in event.payload:
                raise PoisonEvent(event, f"unreadable payload: {event.payload[UNREADABLE_PAYLOAD]}")
            messages.append(h.message(self.prefix, event, extras[event.seq]))
        nc = await self._connection()
        await self._ensure_stream()
        self._batches += 1
        replies = [f"{self._inbox}.{self._batches}_{i}" for i in range(len(messages))]
        commands = []
        for event, msg, reply in zip(events, messages, replies, strict=True):
            command, size = msg.hpub(reply)
            if size > self._max_message:
                raise PoisonEvent(
                    event, f"message of {size} bytes exceeds the limit {self._max_message}"
                )
            commands.append(command)
        acks = _Acks(self._batches, len(messages), [None] * len(messages))
        self._acks = acks
        try:
            with _as_outage("publishing"):
                if not nc.is_connected:
                    raise RelayUnavailable("NATS unavailable: not connected (reconnecting)")
                await _send(nc, messages, replies, commands)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._ack_timeout_s):
                    await acks.done.wait()
        finally:
            self._acks = None
        self._settle(batch, events, acks)

    def _settle(self, batch: Batch, events: Sequence[StoredEvent], acks: _Acks) -> None:
        """Count the acks; raise unless every message was stored."""
        contiguous = batch.start
        first_failure: tuple[StoredEvent, dict[str, Any] | BaseException | None] | None = None
        stored = duplicates = 0
        for event, result in zip(events, acks.results, strict=True):
            if isinstance(result, dict) and "error" not in result:
                if result.get("duplicate"):
                    duplicates += 1
                else:
                    stored += 1
                if first_failure is None:
                    contiguous = event.position
            elif first_failure is None:
                first_failure = (event, result)
        self._published.inc(stored)
        self._duplicates.inc(duplicates)
        if first_failure is None:
            return
        event, result = first_failure
        if result is not None:
            # Refused, not merely unanswered: later messages may have been stored after
            # it, so the fence must not skip it (see the module's docstring). Unanswered
            # ones (an outage mid-batch) are in the stream in order, if at all.
            self._sure = contiguous
        missing = sum(1 for r in acks.results if r is None)
        if result is None:
            raise RelayUnavailable(
                f"NATS unavailable: {missing} of {len(events)} acks missing after "
                f"{self._ack_timeout_s}s (first: seq={event.seq})"
            )
        if isinstance(result, BaseException):
            raise RelayUnavailable(f"NATS unavailable: {result}") from result
        error = result["error"]
        api = nats.js.errors.APIError.from_error(error)
        if unavailable(api):
            raise RelayUnavailable(f"JetStream cannot store now (seq={event.seq}): {error}")
        if len(events) == 1:
            raise PoisonEvent(event, f"JetStream refused the message: {error}")
        raise RuntimeError(f"JetStream refused the message of seq={event.seq}: {error}")

    async def _on_ack(self, msg: Msg) -> None:
        acks = self._acks
        if acks is None:
            return
        token = msg.subject.rsplit(".", 1)[-1]
        batch, _, index = token.partition("_")
        if batch != str(acks.batch) or not index.isdigit() or int(index) >= acks.expected:
            return  # a late ack of an earlier batch
        i = int(index)
        if acks.results[i] is not None:
            return
        result: dict[str, Any] | BaseException
        if not msg.data and msg.headers and msg.headers.get("Status") == "503":
            result = RelayUnavailable(f"no stream listens on {self.prefix}.> (no responders)")
        else:
            try:
                result = orjson.loads(msg.data)
            except orjson.JSONDecodeError as exc:
                result = exc
            if not isinstance(result, dict | BaseException):
                result = ValueError(f"not an ack: {msg.data[:100]!r}")
        acks.results[i] = result
        acks.received += 1
        if acks.received >= acks.expected:
            acks.done.set()

    async def _extras(self, events: Sequence[StoredEvent]) -> dict[int, h.Extra]:
        rows = await self._pool.fetch(_EXTRA, [e.seq for e in events])
        extras: dict[int, h.Extra] = {}
        for row in rows:
            metadata = parse_json(row["metadata"]) if row["metadata"] else {}
            extras[row["seq"]] = h.Extra(
                metadata if isinstance(metadata, dict) else {}, int(row["schema_version"])
            )
        return extras

    # -- the stream -------------------------------------------------------------------------

    async def _read_fence(self) -> Position | None:
        """The position of the last event this relay published to the stream, if any."""
        js = await self._jetstream()
        await self._ensure_stream()
        with _as_outage("reading the stream's last message"):
            try:
                last = await js.get_last_msg(self.stream, f"{self.prefix}.>")
            except nats.js.errors.NotFoundError:
                return None
        text = (last.headers or {}).get(h.POSITION)
        if not text:
            log.warning(
                "%s: the last message on %s.> (stream seq %s) has no %s header: "
                "relying on the duplicate window alone",
                self._name,
                self.prefix,
                last.seq,
                h.POSITION,
            )
            return None
        return Position.from_checkpoint(text)

    async def _ensure_stream(self) -> None:
        """The stream exists and covers ``<prefix>.>`` (created if missing; an existing
        one keeps its configuration, its subjects extended only if they miss ours)."""
        if self._stream_ready:
            return
        js = await self._jetstream()
        nc = await self._connection()
        wanted = f"{self.prefix}.>"
        with _as_outage("stream info"):
            try:
                info = await js.stream_info(self.stream)
            except nats.js.errors.NotFoundError:
                info = None
            if info is None:
                config = StreamConfig(
                    name=self.stream, subjects=[wanted], duplicate_window=self._window_s
                )
                try:
                    info = await js.add_stream(config)
                    log.info(
                        "%s: created stream %s on %s (duplicate window %ss)",
                        self._name,
                        self.stream,
                        wanted,
                        self._window_s,
                    )
                except nats.js.errors.BadRequestError:  # created meanwhile by another
                    info = await js.stream_info(self.stream)
            subjects = list(info.config.subjects or [])
            if not any(covers(s, wanted) for s in subjects):
                log.warning(
                    "%s: stream %s has subjects %s; adding %s", self._name, self.stream, subjects,
                    wanted,
                )  # fmt: skip
                info.config.subjects = [*subjects, wanted]
                info = await js.update_stream(info.config)
        limit = info.config.max_msg_size
        self._max_message = (
            min(nc.max_payload, limit) if limit is not None and limit > 0 else nc.max_payload
        )
        self._stream_ready = True

    # -- the connection ---------------------------------------------------------------------

    async def _jetstream(self) -> JetStreamContext:
        await self._connection()
        assert self._js is not None
        return self._js

    async def _connection(self) -> Client:
        """Connected lazily, in the running loop; nats-py reconnects it forever after
        (:class:`RelayUnavailable` meanwhile: requests would only wait for their timeout)."""
        if self._nc is not None and not self._nc.is_closed:
            if not self._nc.is_connected:
                raise RelayUnavailable("NATS unavailable: not connected (reconnecting)")
            return self._nc
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            if self._nc is not None and not self._nc.is_closed:
                return self._nc
            nc = Client()
            try:
                with _as_outage(f"connecting to {_redacted(self._url)}"):
                    async with asyncio.timeout(CONNECT_TIMEOUT_S):
                        await nc.connect(
                            self._url,
                            name=f"cqrs-projector {self._name}",
                            allow_reconnect=True,
                            max_reconnect_attempts=-1,
                            reconnect_time_wait=1,
                            connect_timeout=1,
                            error_cb=self._on_error,
                            disconnected_cb=self._on_disconnected,
                            reconnected_cb=self._on_reconnected,
                        )
                    inbox = f"{nc.new_inbox()}"
                    self._sub = await nc.subscribe(
                        f"{inbox}.*", cb=self._on_ack, pending_msgs_limit=1_000_000
                    )
            except BaseException:
                with contextlib.suppress(Exception):
                    await nc.close()
                raise
            self._inbox = inbox
            self._nc = nc
            self._closing = False
            self._js = nc.jetstream(timeout=REQUEST_TIMEOUT_S)
            self._stream_ready = False
            log.info("%s: connected to NATS at %s", self._name, _redacted(self._url))
            return nc

    async def _on_error(self, exc: Exception) -> None:
        log.debug("%s: NATS: %s: %s", self._name, type(exc).__name__, exc)

    async def _on_disconnected(self) -> None:
        if not self._closing:
            log.warning("%s: disconnected from NATS; reconnecting", self._name)

    async def _on_reconnected(self) -> None:
        log.warning("%s: reconnected to NATS", self._name)
        self._stream_ready = False  # the server may be a new one


_CHUNK = 1 << 18  # bytes handed to the client's write buffer at a time


async def _send(
    nc: Client, messages: Sequence[h.Message], replies: Sequence[str], commands: list[bytes]
) -> None:
    """Write the batch on the connection, in order, without waiting for anything.

    ``Client.publish`` costs some 40 µs per message in nats-py (it validates and encodes
    the headers again, and awaits once per message): a third of the relay's time. So the
    ``HPUB`` commands are built once (:meth:`headers.Message.hpub`, validated by
    construction: subject tokens and header values are sanitised there) and handed to the
    client's write buffer in large chunks (``Client._send_command``, then one flush), the
    path ``publish`` itself ends in. Without those (another nats-py), ``publish`` it is.
    """
    send = getattr(nc, "_send_command", None)
    flush = getattr(nc, "_flush_pending", None)
    if send is None or flush is None:
        for msg, reply in zip(messages, replies, strict=True):
            await nc.publish(msg.subject, msg.body, reply=reply, headers=msg.headers)
        return
    chunk: list[bytes] = []
    size = 0
    for command in commands:
        chunk.append(command)
        size += len(command)
        if size >= _CHUNK:
            await send(b"".join(chunk))
            chunk, size = [], 0
    if chunk:
        await send(b"".join(chunk))
    await flush()


def _redacted(url: str) -> str:
    """``url`` without a password."""
    scheme, sep, rest = url.rpartition("://")
    return f"{scheme}{sep}{rest.rpartition('@')[2]}"
