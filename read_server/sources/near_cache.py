"""The read server's in-process near-cache of one Redis projection (a :class:`Shelf`).

It holds answers exactly as Redis gave them (document bytes, or "no such document";
pages of a list) and drops them when the projector says they changed: every committed
batch publishes the ids and indexes it touched and its new checkpoint
(:mod:`common.changes`, fed in by :mod:`read_server.sources.change_feed`).

Why an answer in the shelf is never older than the shelf's ``checkpoint``: messages
arrive in commit order on one connection; an answer read from Redis at time *t* is
current at *t*, and every batch committed after *t* drops it when its message arrives.
The one race is an answer that was read *before* a batch but is put on the shelf
*after* that batch's message was handled: the shelf would keep it forever. So a fill
carries the shelf's ``epoch`` (one step per message) from before its read, and is
kept only if no message since then touched what it holds (a short history of recent
messages answers that; older than the history, or a flush since, and it is dropped).

Without a live subscription (not yet subscribed, connection lost, Redis silent) the
shelf holds nothing and keeps nothing: every read goes to Redis, as without a cache.

Two bounds, the oldest entries going first: documents (a page counting as its documents
plus one; ``CQRS_NEAR_CACHE_DOCUMENTS``, which is also the off switch) and bytes (keys
and values plus what Python spends on holding them; ``CQRS_NEAR_CACHE_BYTES``). The
bytes bound is the one that bounds memory: a count of documents says nothing of their
size, and one set of documents can be held many times over on pages of distinct keys
(every page size is a key of its own).
"""

from __future__ import annotations

import enum
import logging
import sys
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from common.changes import ChangeMessage
from common.metrics import NEAR_CACHE_FLUSHES, NEAR_CACHE_READS
from common.positions import Position
from read_server.sources.base import Freshness, Page

log = logging.getLogger(__name__)

# Messages remembered to judge fills against; a fill that took longer than this many
# batches is simply not kept.
HISTORY = 256

# (index name, ZRANGE start, how many members): one page of one list.
PageKey = tuple[str, str, int]

# What holding an entry costs besides the characters and bytes of its keys and values:
# a cached get its dict slot and the headers of its id and bytes objects; a page the key
# tuple, the Page, its list and the cached-page record, plus per document on it the
# headers of its bytes and id objects and its page-of-document link. Measured with
# tracemalloc, rounded up (tests/unit/test_near_cache.py checks the count never falls short).
DOC_OVERHEAD = 160
PAGE_OVERHEAD = 640
PAGE_DOCUMENT_OVERHEAD = 400
DEFAULT_MAX_BYTES = 64 * 1024 * 1024


class Miss(enum.Enum):
    """Not on the shelf (as opposed to a cached "no such document", ``None``)."""

    MISS = enum.auto()


MISS = Miss.MISS


@dataclass(frozen=True, slots=True)
class _Touched:
    epoch: int
    ids: frozenset[str]
    indexes: frozenset[str]
    everything: bool = False


@dataclass(frozen=True, slots=True)
class _CachedPage:
    page: Page
    ids: tuple[str, ...]  # the documents on it
    size: int  # bytes counted for it (see page_size)


def doc_size(ident: str, doc: bytes | None) -> int:
    """Bytes a cached get is counted for."""
    return DOC_OVERHEAD + len(ident) + (0 if doc is None else len(doc))


def page_size(key: PageKey, page: Page, ids: tuple[str, ...]) -> int:
    """Bytes a cached page is counted for."""
    documents = sum(len(item) for item in page.items) + sum(len(i) for i in ids)
    # getsizeof: an index name may hold characters stored in 2 or 4 bytes each.
    keys = sys.getsizeof(key[0]) + sys.getsizeof(key[1])
    return PAGE_OVERHEAD + keys + documents + PAGE_DOCUMENT_OVERHEAD * len(ids)


class Shelf:
    """Cached answers of one projection, and the checkpoint they are at least as fresh as.

    ``max_documents`` bounds the documents held, a page counting as its documents plus
    one; ``max_bytes`` the bytes (:func:`doc_size`, :func:`page_size`). The oldest
    entries go first; an entry that alone passes a bound is not kept.
    """

    def __init__(
        self, projection: str, max_documents: int, max_bytes: int = DEFAULT_MAX_BYTES
    ) -> None:
        self.projection = projection
        self.live = False
        self.generation: int | None = None
        self.checkpoint: Position | None = None
        self.epoch = 0
        self._max_documents = max_documents
        self._max_bytes = max_bytes
        self._held = 0  # documents held: one per cached get, len(ids) + 1 per page
        self._bytes = 0  # bytes held, as doc_size and page_size count them
        self._touched: deque[_Touched] = deque(maxlen=HISTORY)
        self._docs: dict[str, bytes | None] = {}
        self._pages: dict[PageKey, _CachedPage] = {}
        self._pages_of_index: dict[str, set[PageKey]] = {}
        self._pages_of_doc: dict[str, set[PageKey]] = {}
        self._hit = NEAR_CACHE_READS.labels(projection, "hit")
        self._miss = NEAR_CACHE_READS.labels(projection, "miss")
        self._bypass = NEAR_CACHE_READS.labels(projection, "bypass")

    def __len__(self) -> int:
        return self._held

    @property
    def bytes_held(self) -> int:
        """Bytes the entries on the shelf are counted for (never above ``max_bytes``)."""
        return self._bytes

    def serves(self, freshness: Freshness) -> bool:
        """Whether this read may be answered (or filled) here: the shelf is live and,
        for a consistency token, already at least as fresh as the token."""
        ok = self.live and (
            freshness.position is None
            or (self.checkpoint is not None and self.checkpoint >= freshness.position)
        )
        if not ok:
            self._bypass.inc()
        return ok

    # -- reads ------------------------------------------------------------------------------

    def doc(self, ident: str) -> bytes | Miss | None:
        found = self._docs.get(ident, MISS)
        (self._miss if found is MISS else self._hit).inc()
        return found

    def page(self, key: PageKey) -> Page | Miss:
        found = self._pages.get(key)
        (self._miss if found is None else self._hit).inc()
        return MISS if found is None else found.page

    # -- fills ------------------------------------------------------------------------------

    def keep_doc(self, since: int, ident: str, doc: bytes | None) -> None:
        """Keep what Redis answered for ``ident`` by a read that began at epoch ``since``."""
        if self._unchanged_since(since, (ident,), ()):
            self._drop_doc(ident)
            size = doc_size(ident, doc)
            if not self._make_room(1, size):
                return
            self._docs[ident] = doc
            self._held += 1
            self._bytes += size

    def keep_page(self, since: int, key: PageKey, page: Page, ids: tuple[str, ...]) -> None:
        """Keep a page Redis answered (``ids``: its documents) by a read begun at ``since``."""
        if not self._unchanged_since(since, ids, (key[0],)):
            return
        self._drop_page(key)
        size = page_size(key, page, ids)
        if not self._make_room(len(ids) + 1, size):
            return
        self._pages[key] = _CachedPage(page, ids, size)
        self._held += len(ids) + 1
        self._bytes += size
        self._pages_of_index.setdefault(key[0], set()).add(key)
        for ident in ids:
            self._pages_of_doc.setdefault(ident, set()).add(key)

    # -- what the change feed says ----------------------------------------------------------

    def subscribed(self) -> None:
        """The subscription is confirmed: from now on every change will be heard of."""
        self.flush("subscribed")
        self.live = True

    def lost(self, reason: str) -> None:
        """The subscription (or Redis) is gone: changes may go unheard; hold nothing."""
        self.live = False
        self.flush(reason)

    def apply(self, message: ChangeMessage) -> None:
        """One message from the projector, in commit order."""
        if message.switch or (self.generation not in (None, message.generation)):
            # A new generation replaces everything (a missed switch, too).
            self.flush("switch")
        else:
            self._step(_Touched(self.epoch + 1, message.ids, message.indexes))
            for ident in message.ids:
                self._drop_doc(ident)
                for key in list(self._pages_of_doc.get(ident, ())):
                    self._drop_page(key)
            for index in message.indexes:
                for key in list(self._pages_of_index.get(index, ())):
                    self._drop_page(key)
        self.generation = message.generation
        self.checkpoint = message.checkpoint

    def flush(self, reason: str) -> None:
        """Drop everything, and every fill under way."""
        self._step(_Touched(self.epoch + 1, frozenset(), frozenset(), everything=True))
        self.generation = self.checkpoint = None
        if self._held:
            NEAR_CACHE_FLUSHES.labels(self.projection, reason).inc()
            log.info(
                "near-cache %s: dropped %d documents (%s)", self.projection, self._held, reason
            )
        self._docs.clear()
        self._pages.clear()
        self._held = 0
        self._bytes = 0
        self._pages_of_index.clear()
        self._pages_of_doc.clear()

    # -- internals --------------------------------------------------------------------------

    def _step(self, touched: _Touched) -> None:
        self.epoch = touched.epoch
        self._touched.append(touched)

    def _unchanged_since(self, since: int, ids: Iterable[str], indexes: Iterable[str]) -> bool:
        if not self.live:
            return False
        if since == self.epoch:
            return True
        if not self._touched or self._touched[0].epoch > since + 1:
            return False  # the history no longer reaches back to the read
        ids, indexes = frozenset(ids), frozenset(indexes)
        for touched in reversed(self._touched):
            if touched.epoch <= since:
                break
            if touched.everything or not ids.isdisjoint(touched.ids):
                return False
            if not indexes.isdisjoint(touched.indexes):
                return False
        return True

    def _make_room(self, documents: int, size: int) -> bool:
        """Drop the oldest entries until ``documents`` and ``size`` more fit; ``False``
        (nothing dropped) if they could not fit on an empty shelf."""
        if documents > self._max_documents or size > self._max_bytes:
            return False
        while self._held and (
            self._held + documents > self._max_documents or self._bytes + size > self._max_bytes
        ):
            if len(self._docs) >= len(self._pages):
                self._drop_doc(next(iter(self._docs)))
            else:
                self._drop_page(next(iter(self._pages)))
        return True

    def _drop_doc(self, ident: str) -> None:
        doc = self._docs.pop(ident, MISS)
        if doc is not MISS:
            self._held -= 1
            self._bytes -= doc_size(ident, doc)

    def _drop_page(self, key: PageKey) -> None:
        cached = self._pages.pop(key, None)
        if cached is None:
            return
        self._held -= len(cached.ids) + 1
        self._bytes -= cached.size
        _discard(self._pages_of_index, key[0], key)
        for ident in cached.ids:
            _discard(self._pages_of_doc, ident, key)


def _discard(links: dict[str, set[PageKey]], name: str, key: PageKey) -> None:
    keys = links.get(name)
    if keys is not None:
        keys.discard(key)
        if not keys:
            del links[name]
