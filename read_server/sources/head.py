"""The head of the event log: tells a consistency token from the future.

A token is a command's ``(xid, seq)``, handed out after its transaction committed, so
any snapshot taken later has ``pg_snapshot_xmax`` (the first transaction id not yet
assigned) above its xid. A token at or beyond it names a transaction that has not
even begun: no command wrote it, and waiting for it would only hold the request for
the whole consistency wait and then answer UNAVAILABLE (a server fault, to alerts).
It is INVALID_ARGUMENT instead, at once.

Asked only on the slow path (a token the projection has not reached yet), and the head
only grows: the highest value seen answers most checks without a query. When
PostgreSQL cannot be asked, the token is given the benefit of the doubt (the read waits
as before), so Redis reads never depend on PostgreSQL.
"""

from __future__ import annotations

import logging

import asyncpg

from common.errors import FieldViolation, InvalidArgument
from common.outages import is_outage
from common.positions import Position

log = logging.getLogger(__name__)

_HEAD = "SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint"


def ahead_of_the_log() -> InvalidArgument:
    return InvalidArgument(
        FieldViolation(
            "consistency_token",
            "is ahead of the event log: no command has written it yet",
        )
    )


class LogHead:
    """:meth:`check` positions against the log's head, read through ``pool``."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._seen = 0  # the highest xmax read so far

    async def check(self, position: Position) -> None:
        """Nothing if a command may have written ``position``; ``InvalidArgument``
        (a field violation on ``consistency_token``) if none can have."""
        if position.xid < self._seen:
            return
        try:
            head = int(await self._pool.fetchval(_HEAD))
        except Exception as exc:
            if not is_outage(exc):
                raise
            log.debug("log head unknown (%s): the token is waited for", type(exc).__name__)
            return
        self._seen = max(self._seen, head)
        if position.xid >= head:
            raise ahead_of_the_log()
