"""``cqrs projector status``: checkpoint, events behind and failures of every projection."""

from __future__ import annotations

import sys
from typing import TextIO

from projector.bootstrap import Resources, make_store
from projector.outbox import count_after
from projector.projections import ALL_PROJECTIONS, parse_projection
from projector.stores.redis_store import RedisProjectionStore

_LAG_CAP = 10_000_000


async def status(resources: Resources, *, out: TextIO | None = None) -> int:
    """Print one line per projection; 1 if any projection is stopped on a failure, else 0."""
    out = out if out is not None else sys.stdout
    failures = await resources.failures.all()
    print(f"{'projection':<16} {'checkpoint (xid:seq)':<42} {'behind':>8}  state", file=out)
    for projection in ALL_PROJECTIONS:
        _, kind = parse_projection(projection)
        store = make_store(resources, projection)
        checkpoint = await store.checkpoint()
        behind = await count_after(resources.pool, checkpoint, kind.consumes, _LAG_CAP)
        state = "ok"
        if isinstance(store, RedisProjectionStore):
            gen = store.generation
            state = f"ok (generation {gen})" if gen is not None else "not built yet"
        failure = failures.get(projection)
        if failure is not None:
            state = (
                f"STOPPED at event seq={failure.event_seq} ({failure.event_type}) since "
                f"{failure.failed_at.isoformat(timespec='seconds')}: {failure.error}"
            )
        shown = f">={behind}" if behind >= _LAG_CAP else str(behind)
        print(f"{projection:<16} {checkpoint.to_checkpoint():<42} {shown:>8}  {state}", file=out)
    return 1 if failures else 0
