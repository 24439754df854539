"""The continuous audit: ``cqrs projector run`` compares sampled documents of the
projections it leads with the write model, all the time (docs/ARCHITECTURE.md,
"Continuous audit").

Every tick (``TICK_S``) each entity whose projections this process leads gets
``CQRS_AUDIT_RATE * elapsed`` more ids from its round-robin cursor
(:mod:`projector.audit_cursor`), and each led store of that entity (a segment: only the
ids it owns) is compared on them exactly as ``cqrs projector verify`` compares a whole
store (:mod:`projector.verify`): the store's checkpoint first, then its documents, then
one write-model snapshot holding those documents and which of them an event after that
checkpoint touched (*in flight*: skipped, so a live system never reports a false drift).
A difference is compared again (a fresh checkpoint, read, snapshot) before it is called a
drift, so what a rebuild or a Redis loss does between two reads is not one either.

A drift: ``cqrs_audit_drift_total`` + 1, a WARNING with the field diff, the consumer's
hash for ``cqrs projector status`` (:mod:`projector.audit_record`). With
``CQRS_AUDIT_REPAIR`` the document is rewritten as the write model holds it, through the
store's own batch path (:meth:`ProjectionStore.commit`) with the checkpoint it was compared
at as both the expected and the new checkpoint: a compare-and-set that writes that one
document (and, in Redis, the index entries it implies) and leaves the checkpoint where it
is. The document was not in flight, so its state at that checkpoint is the write model's;
if a batch commits in between, the checkpoint has moved, nothing is written, and the next
lap looks again.

The audit is one task beside the runners. It reads through the process's pools one small
statement at a time (``MAX_PER_TICK`` ids at most), so a batch never waits on it for more
than a connection; it never holds a lock a runner needs except for the instant of a
repair's commit, the same lock a batch takes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

import asyncpg
from google.protobuf.message import Message

from common.cancellation import raise_if_cancelled
from common.entities import Entity
from common.metrics import AUDIT_CHECKED, AUDIT_DRIFT
from common.positions import Position
from projector.audit_cursor import FetchIds, RoundRobin, write_model_ids
from projector.audit_record import AuditRecord
from projector.errors import CheckpointMoved, StoreLost
from projector.leadership import leader_of, lease_session_name
from projector.projection import Projection, compare_documents
from projector.runner import ConsumerRunner
from projector.segments import base_name
from projector.stores.port import Change
from projector.verify import WriteModelReference
from projector.wakeup import sleep_unless

log = logging.getLogger(__name__)

TICK_S = 0.25
MAX_PER_TICK = 500  # ids per entity and tick, whatever the rate and however late the tick


@dataclass(frozen=True, slots=True)
class AuditConfig:
    rate: float  # documents per second and entity (0: off)
    repair: bool = False
    tick_s: float = TICK_S


@dataclass
class Findings:
    """What this process's audit found in one consumer since it began auditing it."""

    checked: int = 0
    drifts: int = 0
    last_id: str | None = None
    repaired: int = 0


@dataclass(frozen=True, slots=True)
class _Compared:
    """One comparison of a store with the write model on some documents."""

    checkpoint: Position
    actual: Mapping[str, Message]
    expected: Mapping[str, Message]
    compared: int  # documents compared (those in flight were not)
    differences: Mapping[str, list[str]]  # by document id


@dataclass
class _Entity:
    cursor: RoundRobin
    fetch: FetchIds
    credit: float = 0.0


class Auditor:
    """Samples the documents of the projections ``runners`` lead (see the module docstring)."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        record: AuditRecord,
        runners: Sequence[ConsumerRunner],
        config: AuditConfig,
    ) -> None:
        self._pool = pool
        self._record = record
        self._runners = list(runners)
        self._config = config
        self._reference = WriteModelReference(pool)
        self._entities: dict[str, _Entity] = {}
        self._started: set[str] = set()  # consumers whose record this process has begun
        self._by = leader_of(lease_session_name())
        self.findings: dict[str, Findings] = {}

    def led(self) -> list[Projection]:
        """The projections (or segments of one) whose lease this process holds now."""
        return [
            r.consumer for r in self._runners if r.leading and isinstance(r.consumer, Projection)
        ]

    async def run(self, stop: asyncio.Event) -> None:
        """Audit until ``stop`` is set (at once if the rate is 0)."""
        if self._config.rate <= 0:
            return
        last = time.monotonic()
        while not stop.is_set():
            await sleep_unless(stop, self._config.tick_s)
            now = time.monotonic()
            elapsed, last = now - last, now
            try:
                await self.tick(elapsed)
            except Exception as exc:
                # An outage, most likely: the runners say so loudly; try again next tick.
                raise_if_cancelled()
                log.warning("audit: %s: %s; going on next tick", type(exc).__name__, exc)

    async def tick(self, elapsed: float) -> None:
        """Compare the documents ``elapsed`` seconds' worth of the rate asks for."""
        by_entity: dict[str, list[Projection]] = {}
        kinds: dict[str, Entity] = {}
        for projection in self.led():
            by_entity.setdefault(projection.kind.name, []).append(projection)
            kinds[projection.kind.name] = projection.kind
        for name, projections in by_entity.items():
            state = self._entities.get(name)
            if state is None:
                state = _Entity(RoundRobin(), write_model_ids(self._pool, kinds[name]))
                self._entities[name] = state
            # Credit, not ``rate * tick``: ticks late by slow work still add up to the rate;
            # capped so a long stall never turns into a burst.
            state.credit = min(state.credit + self._config.rate * elapsed, MAX_PER_TICK)
            n = int(state.credit)
            if n == 0:
                continue
            state.credit -= n
            ids = await state.cursor.take(n, state.fetch)
            for projection in projections:
                await self.check(projection, ids)

    async def check(self, projection: Projection, ids: Collection[str]) -> None:
        """Compare ``projection`` with the write model on ``ids`` (those it owns)."""
        name = projection.name
        split = projection.split
        # A parked document differs from the write model on purpose (projector.parking).
        parked = next(
            (r.parked_ids() for r in self._runners if r.consumer is projection), frozenset()
        )
        mine = [i for i in ids if (split is None or split.segment.owns(i)) and i not in parked]
        if name not in self._started:
            await self._record.start(name, self._by)
            self._started.add(name)
            # The series exist (0) from the start: the drift alert's increase() needs a
            # sample before the first drift, and a healthy system shows it is audited.
            AUDIT_CHECKED.labels(base_name(name)).inc(0)
            AUDIT_DRIFT.labels(base_name(name)).inc(0)
        first = await self._compare(projection, mine)
        if first is None:
            return  # not built (being rebuilt): nothing to compare
        findings = self.findings.setdefault(name, Findings())
        findings.checked += first.compared
        AUDIT_CHECKED.labels(base_name(name)).inc(first.compared)
        await self._record.checked(name, first.compared)
        if not first.differences:
            return
        # Confirmed by a second comparison of its own (see the module docstring).
        again = await self._compare(projection, sorted(first.differences))
        if again is None:
            return
        for doc_id, lines in sorted(again.differences.items()):
            await self._drift(projection, again, doc_id, lines, findings)

    async def _compare(self, projection: Projection, ids: Sequence[str]) -> _Compared | None:
        if not ids:
            return None
        store = projection.store
        try:
            # verify's order: the store's checkpoint, its documents, then the snapshot.
            checkpoint = await store.checkpoint()
        except StoreLost:
            return None
        actual = await store.load(ids)
        expected = await self._reference.sample(
            projection.kind.name, ids, checkpoint, actual.values()
        )
        skip = expected.in_flight
        differences: dict[str, list[str]] = {}
        for line in compare_documents(
            expected.documents, {i: actual[i] for i in ids if i in actual}, skip
        ):
            differences.setdefault(line.partition(": ")[0], []).append(line)
        return _Compared(
            checkpoint,
            actual,
            expected.documents,
            len(set(ids) - skip),
            differences,
        )

    async def _drift(
        self,
        projection: Projection,
        compared: _Compared,
        doc_id: str,
        lines: list[str],
        findings: Findings,
    ) -> None:
        name = projection.name
        diff = "; ".join(line.partition(": ")[2] for line in lines)
        repaired = self._config.repair and await self._repair(projection, compared, doc_id)
        log.warning(
            "%s: audit found drift in %s at checkpoint %s: %s%s",
            name,
            doc_id,
            compared.checkpoint,
            diff,
            " (repaired)" if repaired else "",
        )
        findings.drifts += 1
        findings.last_id = doc_id
        findings.repaired += int(repaired)
        AUDIT_DRIFT.labels(base_name(name)).inc()
        await self._record.drift(name, doc_id, diff, repaired)

    async def _repair(self, projection: Projection, compared: _Compared, doc_id: str) -> bool:
        """Rewrite ``doc_id`` as the write model holds it, the checkpoint unmoved."""
        at = compared.checkpoint
        change = Change(doc_id, compared.actual.get(doc_id), compared.expected.get(doc_id))
        try:
            await projection.store.commit(at, at, [change])
        except (CheckpointMoved, StoreLost) as exc:
            # A batch (or a rebuild) got in first: the next lap compares it again.
            log.info("%s: audit repair of %s not written: %s", projection.name, doc_id, exc)
            return False
        return True
