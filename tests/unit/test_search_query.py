"""Search query parsing, the tsquery text built from it, and search page tokens."""

from __future__ import annotations

import base64
import re
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.errors import InvalidArgument
from common.pb.shop.v1 import query_service_pb2 as qs
from read_server.search.cursor import (
    InvalidSearchToken,
    SearchCursor,
    cursor_for,
    decode_search_token,
    encode_search_token,
    query_digest,
)
from read_server.search.query import MAX_QUERY_CHARS, MAX_WORDS, InvalidQuery, parse_query
from read_server.servicer import QueryServicer
from read_server.sources.base import SourceSet
from tests.support.read_fixtures import FakeContext, FakeSource

# What a built tsquery may look like: quoted letters/digits, prefix marks, ANDs.
_TSQUERY = re.compile(r"'[^\W_]+':\*( & '[^\W_]+':\*)*")
ID = "6f1c54a4-2f5e-4a57-9a43-3b7f0b0c7f11"


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("wid", ("wid",)),
        ("  Blue   Widget ", ("Blue", "Widget")),
        ("ann.smith+shop@example.org", ("ann", "smith", "shop", "example", "org")),
        ("O'Brien", ("O", "Brien")),
        ("snake_case", ("snake", "case")),
        ("a & b | !c (d) <-> e:* f\\g 'h'", ("a", "b", "c", "d", "e", "f", "g", "h")),
        # "read" twice: repeated words are dropped.
        (
            "'; DROP TABLE read.product_read_model; --",
            ("DROP", "TABLE", "read", "product", "model"),
        ),
        ("日本語 テキスト", ("日本語", "テキスト")),
        ("Émile 😀 Zoë", ("Émile", "Zoë")),
        ("red red RED", ("red", "RED")),
    ],
)
def test_words_are_runs_of_letters_and_digits(text: str, words: tuple[str, ...]) -> None:
    assert parse_query(text).words == words


def test_tsquery_requires_every_word_as_a_prefix() -> None:
    assert parse_query("blue wid").tsquery == "'blue':* & 'wid':*"


@pytest.mark.parametrize(
    ("text", "description"),
    [
        ("", "at least one word"),
        ("  !!! ''' &|:* 😀 ", "at least one word"),
        ("_", "at least one word"),
        ("x" * (MAX_QUERY_CHARS + 1), f"at most {MAX_QUERY_CHARS} characters"),
        (" ".join(["w"] * (MAX_WORDS + 1)), f"at most {MAX_WORDS} words"),
        ("wid\x00get", "NUL"),
    ],
)
def test_unsearchable_queries_are_rejected(text: str, description: str) -> None:
    with pytest.raises(InvalidQuery, match=description):
        parse_query(text)


def test_limits_are_inclusive() -> None:
    assert parse_query("x" * MAX_QUERY_CHARS).words == ("x" * MAX_QUERY_CHARS,)
    assert len(parse_query(" ".join(f"w{i}" for i in range(MAX_WORDS))).words) == MAX_WORDS


@given(st.text(max_size=300))
def test_any_text_gives_a_wellformed_tsquery_or_the_validation_error(text: str) -> None:
    try:
        query = parse_query(text)
    except InvalidQuery:
        return
    assert 1 <= len(query.words) <= MAX_WORDS
    assert _TSQUERY.fullmatch(query.tsquery)
    assert "\\" not in query.tsquery and query.tsquery.count("'") == 2 * len(query.words)


@given(
    st.floats(allow_nan=False, allow_infinity=False),
    st.uuids().map(str),
    st.text(alphabet="abcxyz ", min_size=1, max_size=20).filter(str.strip),
)
def test_tokens_round_trip_exactly(rank: float, ident: str, text: str) -> None:
    query = parse_query(text)
    token = encode_search_token(query_digest("products", query), SearchCursor(rank, ident))
    cursor = cursor_for("products", query, token)
    assert cursor is not None
    assert cursor.id == ident and cursor.rank.hex() == rank.hex()
    assert re.fullmatch(r"[A-Za-z0-9_-]+", token)


def test_tokens_are_bound_to_their_query_and_search() -> None:
    query = parse_query("blue wid")
    token = encode_search_token(query_digest("products", query), SearchCursor(0.5, ID))
    assert cursor_for("products", parse_query("  blue, wid!"), token) == SearchCursor(0.5, ID)
    with pytest.raises(InvalidSearchToken, match="another query"):
        cursor_for("products", parse_query("blue widget"), token)
    with pytest.raises(InvalidSearchToken, match="another query"):
        cursor_for("customers", query, token)


def _b64(raw: str) -> str:
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "token",
    [
        "x",
        "!!!!",
        "A" * 200,
        _b64(f"0123456789abcdef|nan|{ID}"),
        _b64(f"0123456789abcdef|inf|{ID}"),
        _b64(f"0123456789abcdef|0x1.0p+0|{ID.upper()}"),
        _b64(f"0123456789abcdef|0x1.0p+0|{ID}") + "==",  # padding: not canonical
        _b64(f"0123456789abcdef|1.0|{ID}"),  # not a hex float
        _b64(f"0123456789abcdef|0x1p+99999|{ID}"),
        _b64(f"0123456789abcdef|0x1.0p+0|{ID}|extra"),
        _b64(f"0123456789abcdeF|0x1.0p+0|{ID}"),
    ],
)
def test_forged_tokens_are_rejected(token: str) -> None:
    with pytest.raises(InvalidSearchToken):
        decode_search_token(token)


def test_an_empty_token_is_the_first_page() -> None:
    assert decode_search_token("") is None
    assert cursor_for("products", parse_query("x"), "") is None


async def test_bad_requests_collect_every_violation_before_any_read() -> None:
    # Built without PostgreSQL reads: validation must fail before it needs them.
    sources = SourceSet(FakeSource(), FakeSource(), FakeSource())
    servicer = QueryServicer(sources, 1.0)
    other = encode_search_token(
        query_digest("customers", parse_query("ann")), SearchCursor(1.0, str(uuid.uuid4()))
    )
    requests = [
        (qs.SearchProductsRequest(query="&&", page_size=-1, page_token="bogus"), 3),
        (qs.SearchCustomersRequest(query="ann", page_size=1001, consistency_token="c9"), 2),
        (qs.SearchProductsRequest(query="ann", page_token=other), 1),
        (qs.SearchCustomersRequest(query="x" * 201, page_token=other), 1),
    ]
    for request, count in requests:
        search = (
            servicer.SearchProducts
            if isinstance(request, qs.SearchProductsRequest)
            else servicer.SearchCustomers
        )
        with pytest.raises(InvalidArgument) as caught:
            await search(request, FakeContext())
        assert len(caught.value.violations) == count, caught.value.violations
