"""SearchProducts and SearchCustomers (QueryService)."""

from __future__ import annotations

from read_server.reads import RpcMixin


class SearchRpcs(RpcMixin):
    """Mixin of :class:`read_server.servicer.QueryServicer`."""
