"""read_server.sources.replica: LSN parsing and the lag in seconds from sampled positions."""

from __future__ import annotations

from read_server.sources.replica import Lag, LagClock, lsn


def test_lsn_is_a_byte_position() -> None:
    assert lsn("0/0") == 0
    assert lsn("16/B374D848") == (0x16 << 32) | 0xB374D848
    assert lsn("1/0") - lsn("0/FFFFFFFF") == 1


def test_seconds_behind_is_how_long_ago_the_primary_stood_at_the_replay() -> None:
    clock = LagClock(keep=10)
    assert clock.lag(0.0, primary=100, replayed=100) == Lag(0, 0.0)
    assert clock.lag(1.0, primary=200, replayed=100) == Lag(100, 0.0)  # behind since now
    assert clock.lag(2.0, primary=300, replayed=100) == Lag(200, 1.0)  # stood at 200 at t=1
    assert clock.lag(3.0, primary=300, replayed=250) == Lag(50, 1.0)  # 300 first seen at t=2
    assert clock.lag(4.0, primary=300, replayed=300) == Lag(0, 0.0)  # caught up


def test_further_behind_than_kept_is_at_least_the_oldest_sample() -> None:
    clock = LagClock(keep=3)
    for t in range(10):
        lag = clock.lag(float(t), primary=1000 + t, replayed=0)
    assert lag.seconds == 2.0  # the oldest of the three kept, at t=7
