"""A client's search query: its words, and the ``tsquery`` text built from them.

Only letters and digits make words; every other character (quotes, backslashes,
the ``tsquery`` operators ``&|!():*<>``, emoji) separates them. A word can
therefore never carry syntax into ``to_tsquery``, whatever the client sends:
the text built here is always ``'w1':* & 'w2':* ...`` and is passed to
PostgreSQL as a bound parameter.

Case is left alone on purpose: ``to_tsquery('simple', ...)`` folds each word with
the same dictionary (and the database's locale) that built the indexed vectors,
so a word always normalizes exactly as the indexed text did.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_QUERY_CHARS = 200
MAX_WORDS = 16
# \w without the underscore: Unicode letters and digits. PostgreSQL's parser splits
# at '_' too, so a word holding one would become a phrase instead of two words.
_WORD = re.compile(r"[^\W_]+")


class InvalidQuery(ValueError):
    """The query cannot be searched; the message is the field violation's description."""


@dataclass(frozen=True, slots=True)
class SearchQuery:
    """The distinct words of a query, in the order the client typed them."""

    words: tuple[str, ...]

    @property
    def tsquery(self) -> str:
        """Every word as a prefix, all required: ``'wid':* & 'blue':*``."""
        # A word holds only letters and digits, so no quote or backslash needs escaping.
        return " & ".join(f"'{word}':*" for word in self.words)


def parse_query(text: str) -> SearchQuery:
    """The words of ``text``; :class:`InvalidQuery` if it has none, too many, is too
    long or holds a NUL character."""
    if "\x00" in text:
        raise InvalidQuery("must not contain NUL characters")
    if len(text) > MAX_QUERY_CHARS:
        raise InvalidQuery(f"must be at most {MAX_QUERY_CHARS} characters")
    words = _WORD.findall(text)
    if not words:
        raise InvalidQuery("must contain at least one word (letters or digits)")
    if len(words) > MAX_WORDS:
        raise InvalidQuery(f"must have at most {MAX_WORDS} words")
    # A repeated word adds nothing to "every word must match".
    return SearchQuery(tuple(dict.fromkeys(words)))
