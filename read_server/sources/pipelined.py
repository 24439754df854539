"""The read scripts' calls over one pipelined connection per Redis node.

Why: redis-py spends about 135 µs of CPU on each call (a pool checkout and release, two
timeouts, argument encoding, stream reads), more than Redis spends running the script, and a
read server is CPU-bound. A list of a projection spread over three shards makes three calls.
Here a call is one write of the packed command on a connection many calls share, and one
future resolved when hiredis has parsed its reply: about 50 µs, measured side by side
(docs/benchmarks.md, "One script per list, and the read scripts over pipelined connections").

Only the plain case is handled here. Anything else goes through redis-py's call, which
handles it as it always did: an error reply (``NOSCRIPT``, ``MOVED``, ``ASK``, ``TRYAGAIN``,
``CLUSTERDOWN``, ``LOADING``...), a connection not open yet, lost, or silent for longer than
the socket timeout, TLS. So this path changes what a call costs, never what it answers; and a
call may run twice, which is why it serves read-only scripts only.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Sequence
from typing import Any, cast

import hiredis
from redis.asyncio import Redis, RedisCluster
from redis.commands.core import AsyncScript
from redis.crc import key_slot

from common.metrics import REDIS_SCRIPT_CALLS
from common.redis_client import SOCKET_TIMEOUT_S

log = logging.getLogger(__name__)

# After a node could not be reached, its calls go through redis-py for this long.
_RETRY_OPEN_S = 1.0
_PIPELINED = REDIS_SCRIPT_CALLS.labels("pipelined")
_REDIS_PY = REDIS_SCRIPT_CALLS.labels("redis_py")
_Address = tuple[str, int]


class _Lost(Exception):
    """The connection closed before the reply came."""


class _Connection(asyncio.Protocol):
    """Calls in flight on one socket, answered in the order they were sent (RESP2)."""

    def __init__(self, timeout_s: float) -> None:
        self._loop = asyncio.get_running_loop()
        self._timeout_s = timeout_s
        self._reader = hiredis.Reader()
        self._pending: deque[tuple[asyncio.Future[Any], float]] = deque()
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._outgoing: list[bytes] = []
        self._unanswered = 0  # commands written whose replies have not come yet
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.bind(transport)

    def bind(self, transport: asyncio.BaseTransport) -> None:
        """Write on ``transport`` (set from ``create_connection``'s return too: the loop
        calls ``connection_made`` when it sees fit). Not an ``isinstance`` check: uvloop's
        transports are not ``asyncio.Transport`` subclasses."""
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        try:
            while (reply := self._reader.gets()) is not False:
                if not self._pending:
                    raise hiredis.ProtocolError("a reply nobody asked for")
                future, _ = self._pending.popleft()
                self._unanswered -= 1
                if not future.done():  # its caller may have given up (a deadline)
                    future.set_result(reply)
        except hiredis.ProtocolError as exc:
            log.warning("pipelined Redis connection: %s; closing it", exc)
            self.close()
            return
        if not self._unanswered and self._outgoing:
            self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self._timer is not None:
            self._timer.cancel()
        while self._pending:
            future, _ = self._pending.popleft()
            if not future.done():
                future.set_exception(_Lost())

    def send(self, packed: bytes) -> asyncio.Future[Any]:
        """The reply to ``packed`` (a command), once it comes. Commands leave together, in
        one write (one system call, and one wake-up of Redis, not one each): those sent in
        one turn of the event loop, and, while a write's replies are still awaited, all
        those sent meanwhile, written when the last reply comes. Under load each write
        carries more; an idle connection writes at the end of the turn."""
        future = self._loop.create_future()
        self._pending.append((future, self._loop.time()))
        if not self._outgoing and not self._unanswered:
            self._loop.call_soon(self._flush)
        self._outgoing.append(packed)
        if self._timer is None:
            self._timer = self._loop.call_later(self._timeout_s, self._check)
        return future

    def _flush(self) -> None:
        outgoing, self._outgoing = self._outgoing, []
        if self.lost or not outgoing:
            return  # connection_lost has failed their calls
        assert self._transport is not None
        self._unanswered += len(outgoing)
        self._transport.write(outgoing[0] if len(outgoing) == 1 else b"".join(outgoing))

    def close(self) -> None:
        if self._transport is not None:
            self._transport.abort()  # connection_lost fails what is pending

    def _check(self) -> None:
        """A reply overdue by the socket timeout: the node is stuck; give every call in
        flight to redis-py (which times out the same way: an outage, UNAVAILABLE)."""
        self._timer = None
        if not self._pending:
            return
        due = self._pending[0][1] + self._timeout_s
        if self._loop.time() >= due:
            log.warning(
                "pipelined Redis connection: no reply in %.1f s; closing it", self._timeout_s
            )
            self.close()
        else:
            self._timer = self._loop.call_at(due, self._check)


class PipelinedScripts:
    """Calls read-only scripts of ``client`` over pipelined connections, one per node (on a
    cluster, the node redis-py's slot table names for the first key's slot), opened in the
    background on first use; see the module docstring for what falls back to ``client``."""

    def __init__(self, client: Redis, timeout_s: float = SOCKET_TIMEOUT_S) -> None:
        self._cluster = client if isinstance(client, RedisCluster) else None
        kwargs: dict[str, Any] = (
            dict(client.connection_kwargs)
            if self._cluster is not None
            else dict(client.connection_pool.connection_kwargs)
        )
        plain = self._cluster is not None or (
            client.connection_pool.connection_class.__name__ == "Connection"
        )
        self._enabled = plain and not kwargs.get("ssl") and "path" not in kwargs
        self._address: _Address = (str(kwargs.get("host")), int(kwargs.get("port") or 6379))
        self._setup: list[tuple[Any, ...]] = []
        if kwargs.get("password"):
            user = kwargs.get("username")
            self._setup.append(
                ("AUTH", user, kwargs["password"]) if user else ("AUTH", kwargs["password"])
            )
        if self._cluster is None and int(kwargs.get("db") or 0):
            self._setup.append(("SELECT", int(kwargs["db"])))
        self._timeout_s = timeout_s
        self._connections: dict[_Address, _Connection] = {}
        self._opening: dict[_Address, asyncio.Task[None]] = {}
        self._unreachable: dict[_Address, float] = {}
        self._closed = False
        # Calls answered here, and calls given to redis-py (tests; docs/benchmarks.md).
        self.pipelined = 0
        self.fell_back = 0

    def send(
        self, script: AsyncScript, keys: Sequence[str], args: Sequence[Any]
    ) -> asyncio.Future[Any] | None:
        """Send ``script(keys=keys, args=args)`` now over its node's pipelined connection,
        if one is open: the future of its reply (an error reply is a ``hiredis.ReplyError``;
        a lost connection fails it). ``None``: no connection; :meth:`call` instead. Whoever
        uses the reply counts it (:meth:`answered`)."""
        connection = self._connection_for(keys[0]) if self._enabled else None
        if connection is None:
            return None
        return connection.send(
            hiredis.pack_command(("EVALSHA", script.sha, len(keys), *keys, *args))
        )

    def answered(self) -> None:
        """Count a call answered over a pipelined connection."""
        self.pipelined += 1
        _PIPELINED.inc()

    async def call(self, script: AsyncScript, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """``script(keys=keys, args=args)``'s reply."""
        sent = self.send(script, keys, args)
        if sent is not None:
            try:
                reply = await sent
            except _Lost:
                pass
            else:
                if not isinstance(reply, hiredis.ReplyError):
                    self.answered()
                    return reply
        self.fell_back += 1
        _REDIS_PY.inc()
        return await script(keys=list(keys), args=list(args))

    async def aclose(self) -> None:
        """Close every connection (calls in flight fall back to redis-py)."""
        self._closed = True
        for task in self._opening.values():
            task.cancel()
        for connection in self._connections.values():
            connection.close()
        self._connections.clear()

    def _connection_for(self, key: str) -> _Connection | None:
        address = self._node_of(key)
        if address is None:
            return None
        connection = self._connections.get(address)
        if connection is not None and not connection.lost:
            return connection
        loop = asyncio.get_running_loop()
        if (
            not self._closed
            and address not in self._opening
            and loop.time() >= self._unreachable.get(address, 0.0)
        ):
            task = loop.create_task(self._open(address))
            self._opening[address] = task
            task.add_done_callback(lambda _: self._opening.pop(address, None))
        return None

    def _node_of(self, key: str) -> _Address | None:
        if self._cluster is None:
            return self._address
        try:
            node = self._cluster.nodes_manager.get_node_from_slot(key_slot(key.encode()))
        except Exception:  # no slot table yet, a slot not covered: redis-py decides
            return None
        return (node.host, node.port)

    async def _open(self, address: _Address) -> None:
        loop = asyncio.get_running_loop()
        connection: _Connection | None = None
        try:
            async with asyncio.timeout(self._timeout_s):
                transport, connection = await loop.create_connection(
                    lambda: _Connection(self._timeout_s), *address
                )
                connection.bind(transport)
                for command in self._setup:
                    reply = await connection.send(hiredis.pack_command(command))
                    if isinstance(reply, hiredis.ReplyError):
                        raise ConnectionError(f"{command[0]}: {reply}")
        except Exception as exc:  # refused, timed out, AUTH refused...: redis-py serves
            log.info("pipelined Redis connection to %s:%d: %r", *address, exc)
            if connection is not None:
                connection.close()
            self._unreachable[address] = loop.time() + _RETRY_OPEN_S
            return
        if self._closed:
            connection.close()
            return
        self._connections[address] = connection
