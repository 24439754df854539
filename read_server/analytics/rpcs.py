"""The analytics RPCs of QueryService."""

from __future__ import annotations

from read_server.reads import RpcMixin


class AnalyticsRpcs(RpcMixin):
    """Mixin of :class:`read_server.servicer.QueryServicer`."""
