"""Following page tokens in tests without risking an endless loop.

A pagination bug (a token that points back, or never ends) must fail the test at
once, not hang it until the suite's timeout.
"""

from __future__ import annotations


class PageGuard:
    """Call :meth:`next` with every next-page token; fails on a repeat or too many pages."""

    def __init__(self, max_pages: int = 1000) -> None:
        self._seen: set[str] = set()
        self._max_pages = max_pages

    def next(self, token: str) -> str:
        assert token not in self._seen, f"page token {token!r} came back: pagination loops"
        self._seen.add(token)
        assert len(self._seen) < self._max_pages, f"more than {self._max_pages} pages"
        return token
