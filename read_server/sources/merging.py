"""One page of a projection spread over shards, from a shorter page of every shard.

Documents are spread by a hash of their id, so a page of ``size`` draws about
``size / shards`` from each shard. Each shard is asked for a page of
:func:`shard_page_size` (that share plus three standard deviations) after the page's key,
and the first ``size`` of them all make the page. That is the first ``size`` of the whole
list unless a shard gave the page every document it sent and has more (its next one might
belong on the page too): such a shard is read again with a page of ``size`` (about one
list in 400 with three shards, more only if the ids of one page crowd into one shard), and
the shares are counted again.

Why: a spread list reads a page of every shard to keep one page; reading full pages made
Redis, the network and the reply parser handle ``shards`` times the documents the answer
holds (docs/benchmarks.md, "Spread lists: shorter shard pages, no task per shard").
"""

from __future__ import annotations

import asyncio
import functools
import math
from collections.abc import Awaitable, Callable, Sequence
from itertools import chain

from common.cursors import SortKey
from read_server.sources.base import Page

# Reads shard ``i``'s page of ``size`` (after the merged page's key), with its members.
ShardReader = Callable[[int, int], Awaitable[Page]]


@functools.cache
def shard_page_size(size: int, shards: int) -> int:
    """The page each of ``shards`` shards is asked for, for a merged page of ``size``: the
    share a page draws from one shard, plus three standard deviations of it (a binomial:
    ``size`` draws, each from this shard with probability ``1 / shards``)."""
    p = 1 / shards
    return min(size, math.ceil(size * p + 3 * math.sqrt(size * p * (1 - p))))


async def merged_page(read: ShardReader, shards: int, size: int) -> Page:
    """The merged page of ``size`` from ``shards`` shards' pages (after the same key)."""
    asked = shard_page_size(size, shards)
    found = list(await asyncio.gather(*(read(i, asked) for i in range(shards))))
    taken = _shares(found, size)
    # Each round reads at least one shard with a page of ``size``, which is never in doubt,
    # and counts the shares again (a shard read again may have changed meanwhile).
    while doubtful := _in_doubt(found, taken, size):
        again = await asyncio.gather(*(read(i, size) for i in doubtful))
        for i, full in zip(doubtful, again, strict=True):
            found[i] = full
        taken = _shares(found, size)
    return _merge(found, size, taken)


def _shares(pages: Sequence[Page], size: int) -> list[int]:
    """How many of its members each shard's page gives the merged page of ``size``."""
    everything = sorted(chain.from_iterable(p.members for p in pages), reverse=True)
    if len(everything) <= size:
        return [len(p.members) for p in pages]
    last = everything[size - 1]
    return [_at_least(p.members, last) for p in pages]


def _in_doubt(pages: Sequence[Page], taken: Sequence[int], size: int) -> list[int]:
    """The shards whose every document is on the page while they have more (a shorter page
    than ``size``): their next one might belong on it too."""
    return [
        i
        for i, (page, n) in enumerate(zip(pages, taken, strict=True))
        if n == len(page.members) < size and page.next_key is not None
    ]


def _merge(pages: Sequence[Page], size: int, taken: Sequence[int]) -> Page:
    """The merged page: ``taken[i]`` (:func:`_shares`, none in doubt) of each shard's
    page, in list order (newest first); more follow if any member was left over or any
    shard has more."""
    # Members are unique, so the documents are never compared; each page is in list order
    # already, which the sort finds and merges.
    kept = sorted(
        chain.from_iterable(
            zip(p.members[:n], p.items[:n], strict=True) for p, n in zip(pages, taken, strict=True)
        ),
        reverse=True,
    )
    more = sum(len(p.members) for p in pages) > size or any(p.next_key is not None for p in pages)
    last = SortKey.from_member(kept[-1][0]) if more and kept else None
    return Page([item for _, item in kept], last, tuple(member for member, _ in kept))


def _at_least(members: Sequence[bytes], last: bytes) -> int:
    """How many of ``members`` (in descending order) are ``>= last``."""
    lo, hi = 0, len(members)
    while lo < hi:
        mid = (lo + hi) // 2
        if members[mid] >= last:
            lo = mid + 1
        else:
            hi = mid
    return lo
