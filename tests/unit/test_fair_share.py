"""The fair share of leases a projector process may hold (projector.membership)."""

from __future__ import annotations

from projector.membership import Membership

NAMES = ["pg:analytics", "pg:customers", "pg:orders", "pg:products", "redis:orders"]


def members(live: int, units: int = len(NAMES)) -> Membership:
    membership = Membership("postgresql://unused", units, lease_timeout=10)
    membership.live = live
    return membership


def test_alone_a_process_claims_everything() -> None:
    m = members(1)
    assert all(m.claim(n) for n in NAMES)
    assert m.leading == set(NAMES) and not any(m.must_yield(n) for n in NAMES)


def test_claims_stop_at_the_share_and_a_dropped_claim_frees_a_place() -> None:
    m = members(2)  # ceil(5 / 2) = 3
    assert [m.claim(n) for n in NAMES] == [True, True, True, False, False]
    assert m.claim("pg:orders")  # already counted: claiming again is no new place
    m.drop("pg:orders")  # its try failed
    assert m.claim("redis:orders") and not m.claim("pg:orders")


def test_when_a_process_joins_the_last_names_give_way_builds_last() -> None:
    m = members(1)
    for name in NAMES:
        m.claim(name)
    m.live = 2  # share 3: two must go
    assert {n for n in NAMES if m.must_yield(n)} == {"pg:products", "redis:orders"}
    m.building = {"redis:orders"}  # a build is never thrown away: another goes first
    assert {n for n in NAMES if m.must_yield(n)} == {"pg:orders", "pg:products"}
    m.live = 5
    assert {n for n in NAMES if m.must_yield(n)} == set(NAMES) - {"redis:orders"}
