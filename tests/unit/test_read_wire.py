"""List responses built by concatenation are byte-identical to protobuf's serialization."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from google.protobuf import wrappers_pb2
from google.protobuf.message import Message
from hypothesis import given
from hypothesis import strategies as st

from common.cursors import SortKey, encode_page_token
from common.documents import timestamp
from common.pb.shop.v1 import query_service_pb2 as qs
from common.pb.shop.v1 import shop_pb2
from read_server.wire import list_response, passthrough, varint, watch_update
from tests.support.read_fixtures import T0, build_dataset

TOKEN = encode_page_token(SortKey(1_700_000_000_000_000, "6f1c54a4-2f5e-4a57-9a43-3b7f0b0c7f11"))


@given(st.integers(min_value=1, max_value=2**64 - 1))
def test_varint_matches_protobuf(n: int) -> None:
    # UInt64Value is tag 0x08 then the value as a varint (omitted when 0).
    assert wrappers_pb2.UInt64Value(value=n).SerializeToString() == b"\x08" + varint(n)


@pytest.mark.parametrize("n", [0, 1, 127, 128, 300, 16_383, 16_384, 70_000])
def test_varint_is_the_length_prefix_of_bytes_fields(n: int) -> None:
    encoded = wrappers_pb2.BytesValue(value=b"x" * n).SerializeToString()
    assert encoded == (b"\x0a" + varint(n) + b"x" * n if n else b"")


def test_varint_rejects_negative_numbers() -> None:
    with pytest.raises(ValueError):
        varint(-1)


@pytest.mark.parametrize("token", ["", TOKEN])
def test_concatenated_lists_equal_serialized_responses(token: str) -> None:
    ds = build_dataset()
    big = shop_pb2.Product(
        id="00000000-0000-0000-0000-000000000001",
        name="big",
        description="x" * 20_000,  # multi-byte length prefix
        created_at=timestamp(T0),
    )
    products = [*ds.products, big]
    cases: list[tuple[Message, Sequence[Message]]] = [
        (qs.ListProductsResponse(products=products, next_page_token=token), products),
        (qs.ListCustomersResponse(customers=ds.customers, next_page_token=token), ds.customers),
        (qs.ListOrdersResponse(orders=ds.orders, next_page_token=token), ds.orders),
        (qs.ListOrdersResponse(next_page_token=token), []),
    ]
    for response, docs in cases:
        wire = list_response([d.SerializeToString() for d in docs], token)
        assert wire == response.SerializeToString()
        assert type(response).FromString(wire) == response


def test_an_empty_document_is_still_a_list_entry() -> None:
    wire = list_response([b""], "")
    assert qs.ListCustomersResponse.FromString(wire).customers == [shop_pb2.Customer()]


def test_passthrough_returns_the_bytes_unchanged() -> None:
    payload = b"\x0a\x00"
    assert passthrough(payload) is payload


@given(
    kind=st.sampled_from(list(qs.WatchKind.values())),
    position=st.sampled_from(["", "c1.0.0", "c1.10a9.3", "c1." + "f" * 16 + ".1"]),
    price=st.one_of(st.none(), st.integers(0, 2**62)),
    description=st.text(max_size=300),
)
def test_watch_updates_built_by_concatenation_parse_as_the_message(
    kind: int, position: str, price: int | None, description: str
) -> None:
    """``{Product,Customer,Order}Update`` from stored bytes equals protobuf's own."""
    doc = (
        None
        if price is None
        else shop_pb2.Product(id="p", price_cents=price, description=description)
    )
    raw = doc.SerializeToString() if doc is not None else None
    expected = qs.ProductUpdate(kind=kind, position=position, product=doc)  # type: ignore[arg-type]
    assert watch_update(kind, position, raw) == expected.SerializeToString()
    assert qs.OrderUpdate.FromString(watch_update(kind, position, None)).position == position
