"""The port every consumer of the event log implements, for the runner, rebuild,
status and verify alike.

A consumer follows the log from its own checkpoint: projections (Redis and
PostgreSQL read models), and later relays and dispatchers. The runner
(:mod:`projector.runner`) reads batches in commit-safe order and hands them to
:meth:`Consumer.apply`, which must move the checkpoint from ``batch.start`` to
``batch.next`` atomically with its effects (a compare-and-set), or make its effects
idempotent. Adding a consumer means writing one class that honours this port and
registering it in :mod:`projector.bootstrap`.

Copies: a rebuild (``cqrs projector rebuild``, or the runner healing a lost store)
asks for :meth:`Consumer.new_copy` (empty, at the origin, invisible to readers),
fills it with ``catch_up`` and then :meth:`Consumer.switch_to` it atomically.

``rebuildable`` is False for a consumer whose effects leave the system (the NATS relay,
the webhook fan-out, payments: ``cqrs projector rebuild`` leaves it out, ``new_copy``
raises ``NotRebuildable``, and a missing checkpoint is a first start at the origin, never
``StoreLost``); ``aclose`` releases connections of its own (called when the App closes).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from google.protobuf.message import Message

from common.positions import Position

if TYPE_CHECKING:
    from common.event_log import Executor
    from projector.outbox import Batch

# Applies every event up to the current horizon to a consumer, reading the log through
# the executor given (a connection inside a transaction, or ``None`` for the pool).
CatchUp = Callable[["Consumer", "Executor | None"], Awaitable[Position]]


@dataclass(frozen=True, slots=True)
class Expected:
    """One family of the write model as verify compares a consumer with it."""

    documents: Mapping[str, Message]  # every live document, by id
    # Ids of documents an event committed after the consumer's checkpoint may have changed
    # (the consumer may or may not have applied it when it was read): not compared.
    in_flight: frozenset[str]


class Reference(Protocol):
    """The write model, read for ``cqrs projector verify`` (:mod:`projector.verify`)."""

    async def documents(self, family: str, after: Position | None) -> Expected:
        """``family``'s live documents (``products`` etc.) from a snapshot taken now, and
        the ids an event after ``after`` touched, directly or through a document that
        embeds another (an order shows its customer's contact). Read the consumer first,
        then call this: the snapshot then holds everything the consumer could have
        applied. ``after`` None: nothing is in flight (a consumer that is not built)."""
        ...


@dataclass(frozen=True, slots=True)
class Audit:
    """What ``cqrs projector verify`` found in one consumer."""

    documents: int  # how many it holds
    differences: list[str]  # one line per difference from the write model
    in_flight: int = 0  # documents (or figures) not compared: changed by events in flight


class Consumer(Protocol):
    """One follower of the event log with its own checkpoint."""

    @property
    def name(self) -> str:
        """``backend:family``, e.g. ``redis:orders`` (leases, metrics, logs, failures);
        ``cqrs projector rebuild --only`` selects by family."""
        ...

    @property
    def consumes(self) -> tuple[str, ...]:
        """The aggregate types whose events it reads."""
        ...

    @property
    def rebuildable(self) -> bool:
        """Whether ``cqrs projector rebuild`` may replay it into a new copy."""
        ...

    @property
    def event_types(self) -> tuple[str, ...] | None:
        """Only these event types of those aggregates (``None``: all of them). The log
        reader skips the others in SQL, so they cost a consumer nothing."""
        ...

    async def checkpoint(self) -> Position:
        """The stored checkpoint; :class:`~projector.errors.StoreLost` if there is none."""
        ...

    async def apply(self, batch: Batch) -> None:
        """Apply ``batch.events`` and move the checkpoint from ``batch.start`` to
        ``batch.next``, all or nothing. Raises ``CheckpointMoved`` (nothing changed:
        reload), ``StoreLost`` (rebuild) or ``PoisonEvent`` (an event it cannot apply)."""
        ...

    async def new_copy(self) -> Consumer:
        """An empty copy at the origin that readers do not see."""
        ...

    async def switch_to(self, copy: Consumer, catch_up: CatchUp) -> Position:
        """Make ``copy`` the live one (catching it up first) atomically; its checkpoint."""
        ...

    async def discard(self) -> None:
        """Remove this copy (an abandoned rebuild)."""
        ...

    async def describe(self) -> str:
        """A short state for ``cqrs projector status`` (e.g. ``generation 3``)."""
        ...

    async def aclose(self) -> None:
        """Release what it holds of its own (clients, channels); the pools are the App's."""
        ...

    async def audit(self, reference: Reference) -> Audit | None:
        """How it differs from the write model at the same position of the log (what is
        in flight between the two is not compared); ``None`` if it holds nothing
        comparable (e.g. a relay)."""
        ...


@runtime_checkable
class Lingering(Protocol):
    """A consumer that no consistency token waits on (snapshots, the webhook fan-out) may
    say how long its runner lingers after a batch that was not full before reading again:
    what arrives meanwhile makes one batch. Following a steady stream of commands, each
    consumer would otherwise apply a batch of two or three events per NOTIFY, and its
    Python per batch competes with the projections' for the process's one core."""

    @property
    def linger_s(self) -> float: ...
