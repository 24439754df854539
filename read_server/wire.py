"""List responses assembled from already-serialized documents.

``List{Products,Customers,Orders}Response`` are all ``repeated <Doc> = 1;
string next_page_token = 2;``. Protobuf encodes a message field as tag, varint
length, bytes, so concatenating those pieces is exactly the serialization of
the response; no document is decoded or re-encoded.
"""

from __future__ import annotations

from collections.abc import Iterable

_ITEMS_TAG = b"\x0a"  # field 1, wire type 2 (length-delimited)
_NEXT_PAGE_TOKEN_TAG = b"\x12"  # field 2, wire type 2


def varint(value: int) -> bytes:
    """Base-128 varint of a non-negative integer (protobuf's length prefix)."""
    if value < 0:
        raise ValueError("varint of a negative number")
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def list_response(items: Iterable[bytes], next_page_token: str) -> bytes:
    """The wire bytes of a List*Response holding ``items`` (serialized documents)."""
    parts: list[bytes] = []
    for doc in items:
        parts += (_ITEMS_TAG, varint(len(doc)), doc)
    if next_page_token:  # proto3 omits empty strings
        token = next_page_token.encode()
        parts += (_NEXT_PAGE_TOKEN_TAG, varint(len(token)), token)
    return b"".join(parts)


def passthrough(payload: bytes) -> bytes:
    """The gRPC response serializer for handlers that already return wire bytes."""
    return payload


def watch_update(kind: int, position: str, doc: bytes | None) -> bytes:
    """The wire bytes of a ``{Product,Customer,Order}Update``: ``kind = 1`` (varint),
    ``position = 2``, the document ``= 3`` (already serialized, put as it is)."""
    parts = [b"\x08", varint(kind)] if kind else []
    if position:
        raw = position.encode()
        parts += (b"\x12", varint(len(raw)), raw)
    if doc is not None:
        parts += (b"\x1a", varint(len(doc)), doc)
    return b"".join(parts)
