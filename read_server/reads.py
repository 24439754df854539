"""What the read server's RPC families read besides the entity sources: the event log
(history, time travel), the materialized analytics and the search indexes."""

from __future__ import annotations

from dataclasses import dataclass, field

import asyncpg
import grpc

from read_server.history.limits import HistoryLimits
from read_server.sources.postgres import PostgresSource


@dataclass(frozen=True, slots=True)
class Reads:
    """``pool`` reads PostgreSQL (read-only sessions); ``read_model`` answers whether a
    PostgreSQL projection is built and has reached a consistency token
    (:meth:`PostgresSource.ready`); ``history`` bounds history pages and replays."""

    pool: asyncpg.Pool
    read_model: PostgresSource
    history: HistoryLimits = field(default_factory=HistoryLimits)


class RpcMixin:
    """Base of the RPC-family mixins of ``QueryServicer``: what the servicer gives them."""

    @property
    def _reads(self) -> Reads:
        raise NotImplementedError

    def _wait_budget(self, context: grpc.aio.ServicerContext) -> float:
        """Seconds this request may wait for a projection (see :mod:`read_server.deadlines`)."""
        raise NotImplementedError
