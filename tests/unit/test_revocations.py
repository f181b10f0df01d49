"""The revoked-token set's pure parts: payloads, trust, forgetting expired tokens."""

from __future__ import annotations

from shared.auth import TokenClaims
from shared.revocations import Revocations, parse_payload


def claims(nonce: str) -> TokenClaims:
    return TokenClaims(user_id=1, expires_at=2_000_000_000, nonce=nonce)


def test_payload_is_nonce_then_expiry() -> None:
    assert parse_payload("abc-_1 1700000000") == ("abc-_1", 1_700_000_000)


def test_unreadable_payload_still_revokes_its_nonce() -> None:
    nonce, expires = parse_payload("abc")
    assert nonce == "abc" and expires > 10**15
    nonce, expires = parse_payload("abc soon")
    assert nonce == "abc" and expires > 10**15


def test_memory_is_not_trusted_until_loaded() -> None:
    r = Revocations()
    r.notified("n1 2000000000")
    assert r.cached(claims("n1")) is None  # not live: the caller asks the database
    r._live = True  # what reload() sets once the snapshot is in
    assert r.cached(claims("n1")) is True
    assert r.cached(claims("n2")) is False
    r.lost()
    assert r.cached(claims("n1")) is None


def test_sweep_forgets_only_expired_tokens() -> None:
    r = Revocations()
    r.add("old", 100, now=50)
    r.add("new", 300, now=50)
    r.sweep(now=200)
    assert "old" not in r and "new" in r


def test_sweeps_happen_as_the_set_grows() -> None:
    r = Revocations()
    for i in range(5000):
        r.add(f"n{i}", 10 if i % 2 else 10**10, now=100)
    # Expired entries never pile up beyond about twice what is alive.
    assert sum(1 for i in range(5000) if f"n{i}" in r) <= 2 * 2500 + 1024
    assert all(f"n{i}" in r for i in range(0, 5000, 2))
