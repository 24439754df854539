"""What the continuous audit found, kept in Redis for ``cqrs projector status``.

The audit runs inside ``cqrs projector run``; status is another process, so the findings
live in one hash per audited consumer, ``P:audit:<consumer>`` (``P`` =
``CQRS_REDIS_PREFIX``; e.g. ``cqrs:audit:redis:orders``, ``cqrs:audit:pg:orders#1/4``):
``since`` and ``by`` (when and which process began auditing it: the counts are since
then), ``checked`` and ``drifts`` (documents compared, drifts found), and the last drift's
``last_id``, ``last_at``, ``last_diff`` and ``last_repaired`` (``1`` if repair rewrote it).
A process starting to audit a consumer starts its hash afresh. The Prometheus counters
(``cqrs_audit_*_total``) are what alerts use; the hash only answers "what was it?".
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from redis.asyncio import Redis

_DIFF_MAX = 2000  # characters of the last drift's diff kept (a whole order can be long)


def record_key(prefix: str, consumer: str) -> str:
    """The hash of ``consumer`` (``redis:orders``, or a segment ``redis:orders#1/4``)."""
    return f"{prefix}:audit:{consumer}"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class AuditRecord:
    """Reads and writes the audit's hashes (``client``: the process's Redis client)."""

    def __init__(self, client: Redis, prefix: str) -> None:
        self._client = client
        self._prefix = prefix

    async def start(self, consumer: str, by: str) -> None:
        """``by`` (``host/pid``) begins auditing ``consumer``: counts start from zero."""
        key = record_key(self._prefix, consumer)
        # Not MULTI: on a Redis Cluster client that queues each command from a thread of
        # its own while the event loop waits (common.redis_client). Only this process
        # writes the hash meanwhile, so the two steps need no transaction.
        pipe = self._client.pipeline(transaction=False)
        pipe.delete(key)
        pipe.hset(key, mapping={"since": _now(), "by": by, "checked": 0, "drifts": 0})
        await pipe.execute()

    async def checked(self, consumer: str, documents: int) -> None:
        """``documents`` more were compared."""
        if documents:
            await self._client.hincrby(record_key(self._prefix, consumer), "checked", documents)

    async def drift(self, consumer: str, doc_id: str, diff: str, repaired: bool) -> None:
        """A drift of document ``doc_id`` (``diff``: the field differences)."""
        key = record_key(self._prefix, consumer)
        pipe = self._client.pipeline(transaction=False)  # (not MULTI: see start)
        pipe.hincrby(key, "drifts", 1)
        last = {
            "last_id": doc_id,
            "last_at": _now(),
            "last_diff": diff[:_DIFF_MAX],
            "last_repaired": int(repaired),
        }
        pipe.hset(key, mapping=last)  # type: ignore[arg-type]
        await pipe.execute()

    async def read(self, consumers: Iterable[str]) -> dict[str, dict[str, str]]:
        """The hashes of those of ``consumers`` that have one."""
        names = list(consumers)
        pipe = self._client.pipeline(transaction=False)
        for name in names:
            pipe.hgetall(record_key(self._prefix, name))
        found = await pipe.execute() if names else []
        return {
            name: {_text(k): _text(v) for k, v in fields.items()}
            for name, fields in zip(names, found, strict=True)
            if fields
        }


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def status_line(consumer: str, fields: dict[str, str]) -> str:
    """One line of ``cqrs projector status`` for an audited consumer."""
    line = (
        f"audit {consumer}: {fields.get('drifts', '0')} drift(s) in "
        f"{fields.get('checked', '0')} documents checked since {fields.get('since', '?')} "
        f"by {fields.get('by', '?')}"
    )
    if "last_id" in fields:
        repaired = ", repaired" if fields.get("last_repaired") == "1" else ""
        line += f"; last {fields['last_id']} at {fields.get('last_at', '?')}{repaired}"
    return line
