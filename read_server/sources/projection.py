"""SOURCE_PROJECTION: the Redis projections, one Lua call per get or list.

Documents are stored as ``SerializeToString()`` bytes and returned untouched.
Each call resolves the active generation, checks the consistency token against
that generation's checkpoint and reads, atomically (see ``lua/*.lua``).
"""

from __future__ import annotations

from importlib import resources
from typing import Any, Literal

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript

from common.cursors import SortKey
from common.errors import Unavailable
from common.redis_keys import ALL, ProjectionKeys, category_index, order_index
from read_server.sources.base import Freshness, OrderFilter, Page, PageRequest
from read_server.sources.waiting import BEHIND, Behind, poll_until_fresh

PRODUCTS = "products"
CUSTOMERS = "customers"
ORDERS = "orders"

_NOT_BUILT, _BEHIND, _ANSWER = 0, 1, 2


def _script_text(name: str) -> str:
    return resources.files("read_server.sources").joinpath("lua", name).read_text("utf-8")


class ProjectionSource:
    """Reads ``{prefix}:{products|customers|orders}:...`` as laid out in ARCHITECTURE.md.

    Create one per process: it registers the Lua scripts on ``client`` once
    (EVALSHA, reloaded transparently after a Redis restart).
    """

    def __init__(self, client: aioredis.Redis, prefix: str) -> None:
        self._prefix = prefix
        self._get: AsyncScript = client.register_script(_script_text("get.lua"))
        self._list: AsyncScript = client.register_script(_script_text("list.lua"))

    async def get_product(self, product_id: str, freshness: Freshness) -> bytes | None:
        return await self._get_doc(PRODUCTS, product_id, freshness)

    async def list_products(
        self, page: PageRequest, category: str | None, freshness: Freshness
    ) -> Page:
        index = "idx:" + (ALL if category is None else category_index(category))
        return await self._list_page(PRODUCTS, index, page, freshness)

    async def get_customer(self, customer_id: str, freshness: Freshness) -> bytes | None:
        return await self._get_doc(CUSTOMERS, customer_id, freshness)

    async def list_customers(self, page: PageRequest, freshness: Freshness) -> Page:
        return await self._list_page(CUSTOMERS, "idx:" + ALL, page, freshness)

    async def get_order(self, order_id: str, freshness: Freshness) -> bytes | None:
        return await self._get_doc(ORDERS, order_id, freshness)

    async def list_orders(
        self, page: PageRequest, order_filter: OrderFilter, freshness: Freshness
    ) -> Page:
        index = "idx:" + order_index(order_filter.customer_id, order_filter.status)
        return await self._list_page(ORDERS, index, page, freshness)

    async def _get_doc(self, projection: str, ident: str, freshness: Freshness) -> bytes | None:
        keys = ProjectionKeys(self._prefix, projection)
        base = keys.base
        args = [base, _required(freshness), ident]

        async def attempt() -> bytes | Literal[Behind.BEHIND] | None:
            reply = await self._get(keys=[keys.active], args=args)
            if _check(reply, projection) is BEHIND:
                return BEHIND
            doc = reply[1] if len(reply) > 1 else None
            return bytes(doc) if doc is not None else None

        return await poll_until_fresh(f"redis:{projection}", freshness, attempt)

    async def _list_page(
        self, projection: str, index: str, page: PageRequest, freshness: Freshness
    ) -> Page:
        keys = ProjectionKeys(self._prefix, projection)
        base = keys.base
        start = "+" if page.after is None else "(" + page.after.member()
        args: list[str | int] = [base, _required(freshness), index, start, page.size + 1]

        async def attempt() -> Page | Literal[Behind.BEHIND]:
            reply = await self._list(keys=[keys.active], args=args)
            if _check(reply, projection) is BEHIND:
                return BEHIND
            return _to_page(projection, reply[1], reply[2], page.size)

        return await poll_until_fresh(f"redis:{projection}", freshness, attempt)


def _required(freshness: Freshness) -> str:
    return "" if freshness.position is None else freshness.position.to_checkpoint()


def _check(reply: list[Any], projection: str) -> Literal[Behind.BEHIND] | None:
    if reply[0] == _NOT_BUILT:
        raise Unavailable(
            f"projection redis:{projection} has not been built yet (no active generation)"
        )
    return BEHIND if reply[0] == _BEHIND else None


def _to_page(projection: str, members: list[bytes], docs: list[bytes | None], size: int) -> Page:
    more = len(members) > size
    members, docs = members[:size], docs[:size]
    items: list[bytes] = []
    for member, doc in zip(members, docs, strict=True):
        if doc is None:
            # Batches write docs and indexes in one script, so this is a projector bug:
            # refuse rather than return a short or wrong page.
            raise RuntimeError(f"redis:{projection} index member {member!r} has no document")
        items.append(bytes(doc))
    return Page(items, SortKey.from_member(members[-1]) if more else None)
