"""``timestamp``/``to_datetime`` are faster ``Timestamp.FromDatetime``/``ToDatetime``: same
results."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import given
from hypothesis import strategies as st

from common.documents import timestamp, to_datetime


@given(
    st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)),
    st.sampled_from(
        [None, UTC, timezone(timedelta(hours=5, minutes=30)), timezone(-timedelta(hours=8))]
    ),
)
def test_same_as_from_datetime(value: datetime, zone: timezone | None) -> None:
    value = value.replace(tzinfo=zone)
    expected = Timestamp()
    expected.FromDatetime(value)
    assert timestamp(value) == expected
    assert to_datetime(expected) == expected.ToDatetime(tzinfo=UTC)
