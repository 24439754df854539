"""Group commit: commands that arrive together share one transaction and one COMMIT.

A command's unit of work (:class:`GroupedUnitOfWork`) joins a queue; an executor takes
what is queued (up to ``max_batch``, at once: nothing waits for a window, so an idle
server adds no latency) onto one pooled connection and runs the batch in two passes:

1. **Locks and reads**, one member after the other: each takes its advisory locks and
   reads what it decides on, up to the point where it would write (``flush``). Nothing
   is written in this pass, so the batch has no transaction id yet.
2. **Writes**, in the same order: each member's one write statement (and its idempotency
   row). Then one ``COMMIT`` (one WAL flush) for the batch, and only then does each
   writer get its reply.

Why two passes: the projector's order relies on a later change to an aggregate carrying
a larger transaction id (docs/ARCHITECTURE.md). A batch's id is assigned at its first
write, which comes after *every* lock of the batch is held, so a batch that changes the
same aggregate later waited for our COMMIT before it could lock it, and its id is larger.

Members of one batch never touch the same aggregate: a member whose lock keys meet those
the batch already holds is *deferred* (:class:`~write_server.service_layer.ports.Deferred`:
the service runs it again, leading a later batch, where it sees the earlier member's
committed write). Two requests with one ``request_id`` in a batch are such a pair: the
second then replays the first's stored reply. Deadlocks between batches (other executors,
other processes) cannot form: only a member of a batch that holds no one else's lock may
wait for one (as a command alone does); the others try (``pg_try_advisory_xact_lock``)
and are deferred if a lock is taken.

Isolation without savepoints where none is needed (each costs a round trip): a rule that
says no in the first pass (not found, no stock, a stale version) has written nothing, so
the batch goes on. The one write that can fail by the rules (a customer's email taken by
another) runs in a savepoint of its own and is undone alone. Any other failure inside the
transaction (a statement cancelled, a version guard that a lock should have made
impossible) breaks the batch: it is rolled back and every member not yet answered runs
again (``Deferred``) — none of it was committed, so nothing is lost or doubled.

What a member answers without writing (an error, a replayed reply) is answered at once:
members share no aggregates, so it does not depend on the others. A writer's reply waits
for the COMMIT; if the COMMIT itself fails, every writer of the batch gets that error
(``synchronous_commit`` is untouched: a reply means durable). A member cancelled while it
waits for its turn is skipped. A batch of one member sends exactly the statements of the
one-transaction-per-command unit of work.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from common.errors import AppError
from common.metrics import WRITE_BATCH_COMMANDS, WRITE_BATCH_WAIT
from common.positions import Position
from write_server.adapters.postgres_uow import (
    POOL_ACQUIRE_TIMEOUT_S,
    OrderNumbers,
    PostgresOrderRepository,
    PostgresUnitOfWork,
    Session,
    lock_key,
)
from write_server.domain.aggregate import Aggregate
from write_server.domain.customer import Customer
from write_server.service_layer.ports import Deferred

# Each writing member's savepoint is a subtransaction with an id of its own; beyond 64 in
# one transaction PostgreSQL's snapshots overflow (slower for every session).
MAX_BATCH_LIMIT = 60


@dataclass(frozen=True, slots=True)
class GroupConfig:
    max_batch: int = 32  # members per transaction (at most MAX_BATCH_LIMIT)
    executors: int = 4  # batches in flight at once (one pooled connection each)


class _State(enum.Enum):
    QUEUED = enum.auto()
    READING = enum.auto()  # its first pass: locks and reads
    WAITING_WRITE = enum.auto()
    WRITING = enum.auto()
    WAITING_COMMIT = enum.auto()
    DONE = enum.auto()  # answered, or gone (cancelled while waiting)


@dataclass(eq=False)
class _Member:
    first: bool  # it was deferred: it leads its batch (and may wait for locks)
    state: _State = _State.QUEUED
    enqueued: float = field(default_factory=time.perf_counter)
    turn: asyncio.Future[_Batch] = field(default_factory=asyncio.Future)
    read: asyncio.Future[None] = field(default_factory=asyncio.Future)
    write_turn: asyncio.Future[None] = field(default_factory=asyncio.Future)
    written: asyncio.Future[None] = field(default_factory=asyncio.Future)
    committed: asyncio.Future[None] = field(default_factory=asyncio.Future)

    def end_turn(self, state: _State) -> None:
        """Its pass is over (``state``: what it waits for now, or DONE)."""
        step = self.written if self.state is _State.WRITING else self.read
        self.state = state
        if not step.done():
            step.set_result(None)


class _Batch:
    """One transaction on one connection, its members taking turns."""

    def __init__(self, conn: asyncpg.Connection, size: int) -> None:
        self.conn = conn
        self.shared = size > 1  # a member alone needs no savepoint
        self.begun = False
        self.held: set[int] = set()  # lock keys earlier members keep until the COMMIT
        self.broken = False  # a member could not undo its part: roll everything back
        self._savepoints = 0

    def savepoint(self) -> str:
        self._savepoints += 1
        return f"m{self._savepoints}"


class GroupCommit:
    """The queue and executors of one write-server process (see the module docstring)."""

    def __init__(self, pool: asyncpg.Pool, numbers: OrderNumbers, config: GroupConfig) -> None:
        if not 1 <= config.max_batch <= MAX_BATCH_LIMIT:
            raise ValueError(f"a batch holds 1..{MAX_BATCH_LIMIT} commands")
        self.pool = pool
        self.numbers = numbers
        self._config = config
        self._queue: deque[_Member] = deque()
        self._executors: set[asyncio.Task[None]] = set()

    def unit_of_work(self) -> GroupedUnitOfWork:
        return GroupedUnitOfWork(self)

    def join(self, first: bool) -> _Member:
        """Queue a member (a deferred one at the front: it leads the next batch)."""
        member = _Member(first)
        if first:
            self._queue.appendleft(member)
        else:
            self._queue.append(member)
        if len(self._executors) < self._config.executors:
            task = asyncio.create_task(self._execute(), name="write-batch")
            self._executors.add(task)
            task.add_done_callback(self._executors.discard)
        return member

    def _take(self) -> list[_Member]:
        members: list[_Member] = []
        while self._queue and len(members) < self._config.max_batch:
            head = self._queue[0]
            if head.state is not _State.QUEUED:  # cancelled while queued
                self._queue.popleft()
                continue
            if head.first and members:
                break
            members.append(self._queue.popleft())
        return members

    async def _execute(self) -> None:
        while members := self._take():
            try:
                conn = await self.pool.acquire(timeout=POOL_ACQUIRE_TIMEOUT_S)
            except Exception as exc:
                # No connection (PostgreSQL down, the pool exhausted): each is told so, as
                # a command alone would be (UNAVAILABLE), not run again.
                for member in members:
                    if member.state is _State.QUEUED:
                        member.state = _State.DONE
                        member.turn.set_exception(exc)
                continue
            try:
                await self._run(_Batch(conn, len(members)), members)
            finally:
                with contextlib.suppress(asyncpg.InterfaceError):
                    await self.pool.release(conn)

    async def _run(self, batch: _Batch, members: list[_Member]) -> None:
        WRITE_BATCH_COMMANDS.observe(len(members))
        committing = False
        try:
            for member in members:
                if member.state is not _State.QUEUED:
                    continue
                WRITE_BATCH_WAIT.observe(time.perf_counter() - member.enqueued)
                member.state = _State.READING
                member.turn.set_result(batch)
                await member.read
                if batch.broken:
                    raise Deferred("an earlier command of its batch broke the transaction")
            for member in members:
                if member.state is not _State.WAITING_WRITE:
                    continue
                member.state = _State.WRITING
                member.write_turn.set_result(None)
                await member.written
                if batch.broken:
                    raise Deferred("an earlier command of its batch broke the transaction")
            if batch.begun:
                committing = True
                await batch.conn.execute("COMMIT")
        except BaseException as exc:
            await _abandon(batch)
            _fail(members, exc, committing=committing)
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        for member in members:
            if member.state is _State.WAITING_COMMIT:
                member.state = _State.DONE
                member.committed.set_result(None)


def _fail(members: list[_Member], exc: BaseException, *, committing: bool) -> None:
    """Tell each member still waiting. Nothing of the batch was written unless the COMMIT
    itself failed: the others run again (``Deferred``); a writer whose COMMIT failed gets
    that error (it may have committed: it must not be run again blindly)."""
    again = exc if isinstance(exc, Deferred) else Deferred(f"its batch failed: {exc!r}")
    for member in members:
        state, member.state = member.state, _State.DONE
        if state is _State.QUEUED:
            member.turn.set_exception(again)
        elif state is _State.WAITING_WRITE:
            member.write_turn.set_exception(again)
        elif state is _State.WAITING_COMMIT:
            member.committed.set_exception(exc if committing else again)


def _give_back(member: _Member, turn: asyncio.Future[Any]) -> None:
    """A member cancelled while it waited for ``turn``: skipped if the turn has not come
    (nothing of it written), handed back at once if it came just then."""
    if turn.done() and not turn.cancelled() and turn.exception() is None:
        member.end_turn(_State.DONE)
    else:
        member.state = _State.DONE


async def _abandon(batch: _Batch) -> None:
    """Roll the batch back, or close its connection if that fails (never reused half-done)."""
    try:
        if batch.begun and not batch.conn.is_closed():
            await batch.conn.execute("ROLLBACK")
    except BaseException:
        with contextlib.suppress(Exception):
            batch.conn.terminate()


class _BatchSession(Session):
    """A member's view of the batch's connection: its first statement brings the batch's
    BEGIN along when none was sent yet (and, before a write that may fail, a savepoint)."""

    def __init__(self, uow: GroupedUnitOfWork, conn: asyncpg.Connection) -> None:
        super().__init__(conn)
        self._uow = uow

    async def begin(self) -> None:
        prefix = self._uow.prefix()
        if prefix:
            await self.conn.execute(prefix)
            self._uow.begun()


# The locks a member takes once others' are held: never waiting, the ones it got.
_TRY_LOCKS = (
    "SELECT coalesce(array_agg(k), '{}') FROM unnest($1::bigint[]) AS k "
    "WHERE pg_try_advisory_xact_lock(k)"
)


class GroupedUnitOfWork(PostgresUnitOfWork):
    """A command's unit of work as one member of a batch (see the module docstring)."""

    def __init__(self, group: GroupCommit) -> None:
        super().__init__(group.pool, group.numbers)
        self._group = group

    async def __aenter__(self) -> GroupedUnitOfWork:
        self._member = member = self._group.join(first=self.retried)
        self._savepoint: str | None = None
        self._keys: set[int] = set()  # the locks it took (held until the batch ends)
        try:
            self._batch = await member.turn
        except asyncio.CancelledError:
            _give_back(member, member.turn)
            raise
        self._open(_BatchSession(self, self._batch.conn))
        # Order numbers from a transaction of their own: nextval can assign the reading
        # transaction its id, which the batch must not get before every lock is held.
        self.orders = PostgresOrderRepository(self._session, self._numbers, self._pool)
        self._committed = False
        return self

    def prefix(self) -> str:
        """What must precede this member's next statement, as simple-protocol text: the
        batch's BEGIN if none was sent, and a savepoint if one is wanted."""
        parts = [] if self._batch.begun else ["BEGIN"]
        if self._wants_savepoint and self._savepoint is None:
            self._savepoint = self._batch.savepoint()
            parts.append(f"SAVEPOINT {self._savepoint}")
        return "; ".join(parts)

    _wants_savepoint = False

    def begun(self) -> None:
        self._batch.begun = self._session.begun = True

    async def lock(self, keys: Iterable[str]) -> None:
        ordered = sorted({lock_key(k) for k in keys})
        if not ordered:
            return
        batch, conn = self._batch, self._batch.conn
        if batch.held & set(ordered):
            raise Deferred("an earlier command of its batch holds the same aggregate")
        if not batch.held:
            # Nothing of other members held: waiting cannot deadlock (as one command alone).
            literal = "{" + ",".join(str(k) for k in ordered) + "}"
            statement = (
                f"SELECT count(pg_advisory_xact_lock(k)) FROM unnest('{literal}'::bigint[]) k"
            )
            prefix = self.prefix()
            await conn.execute(f"{prefix}; {statement}" if prefix else statement)
            if prefix:
                self.begun()
            self._keys.update(ordered)
            return
        await self._session.begin()
        got = set(await conn.fetchval(_TRY_LOCKS, ordered))
        self._keys |= got  # held until the batch ends, even if it gives way now
        if len(got) < len(ordered):
            raise Deferred("a lock its batch may not wait for is taken")

    async def _persist(self, changed: list[Aggregate], metadata: dict[str, str]) -> Position:
        # The end of its first pass: its locks stay with the batch; wait to write.
        member = self._member
        self._batch.held |= self._keys
        member.end_turn(_State.WAITING_WRITE)
        try:
            await member.write_turn
        except asyncio.CancelledError:
            _give_back(member, member.write_turn)
            raise
        # A write that can fail by the rules (a customer's email taken) gets a savepoint, so
        # that its failure undoes it alone; any other failure breaks the batch (the others
        # then run again: nothing of it was committed).
        self._wants_savepoint = self._batch.shared and any(isinstance(a, Customer) for a in changed)
        return await super()._persist(changed, metadata)

    async def _commit(self) -> None:
        member = self._member
        if member.state is _State.READING:  # it wrote nothing: its locks stay, it is done
            self._batch.held |= self._keys
            member.end_turn(_State.DONE)
            return
        member.end_turn(_State.WAITING_COMMIT)
        await member.committed

    async def __aexit__(self, *exc_info: object) -> None:
        member = self._member
        error = exc_info[1] if len(exc_info) > 1 else None
        try:
            if not self._committed and member.state in (_State.READING, _State.WRITING):
                await self._undo(member.state, error)
        finally:
            if member.state in (_State.READING, _State.WRITING):
                self._batch.held |= self._keys
                member.end_turn(_State.DONE)

    async def _undo(self, state: _State, error: object) -> None:
        """Leave the batch's transaction as if this member had not been there: nothing to
        do after a rule said no before any write; its savepoint rolled back after a write
        that has one; otherwise (a failed statement, a write without a savepoint) the batch
        is broken and rolled back whole."""
        if not self._batch.shared:
            self._batch.broken = True  # alone: the executor rolls it back
            return
        if state is _State.READING and (error is None or isinstance(error, (AppError, Deferred))):
            return
        if state is _State.WRITING and self._savepoint is not None:
            try:
                await self._batch.conn.execute(f"ROLLBACK TO SAVEPOINT {self._savepoint}")
                return
            except BaseException:
                self._batch.broken = True
                raise
        self._batch.broken = True

    async def rollback(self) -> None:
        """Unused: :meth:`__aexit__` undoes a member's part (see :meth:`_undo`)."""
