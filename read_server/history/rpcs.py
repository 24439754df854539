"""GetAggregateHistory and Get*AsOf (QueryService): the event log as clients see it."""

from __future__ import annotations

from read_server.reads import RpcMixin


class HistoryRpcs(RpcMixin):
    """Mixin of :class:`read_server.servicer.QueryServicer`."""
