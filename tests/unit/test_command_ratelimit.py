"""shared/ratelimit.py: token buckets with a fake clock, and the middleware on a bare app."""

from __future__ import annotations

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from services.command.throttle import LoginLimits, LoginThrottle
from shared.http import error_middleware
from shared.ratelimit import (
    RateLimits,
    TokenBuckets,
    Verdict,
    make_rate_limit_middleware,
    rate_limit_headers,
    tightest,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_bucket_allows_a_burst_of_limit_then_refuses() -> None:
    clock = Clock()
    buckets = TokenBuckets(3, 60.0, clock=clock)
    assert [buckets.hit("k").remaining for _ in range(3)] == [2, 1, 0]
    refused = buckets.hit("k")
    assert not refused.allowed
    assert refused.remaining == 0
    assert refused.retry_after_s == pytest.approx(20.0)  # one token per 20 s
    assert refused.reset_s == pytest.approx(60.0)


def test_bucket_refills_continuously_and_caps_at_limit() -> None:
    clock = Clock()
    buckets = TokenBuckets(3, 60.0, clock=clock)
    for _ in range(3):
        buckets.hit("k")
    clock.now += 20
    assert buckets.hit("k").allowed
    assert not buckets.hit("k").allowed
    clock.now += 3600
    assert buckets.peek("k").remaining == 3


def test_keys_are_independent_and_peek_spends_nothing() -> None:
    buckets = TokenBuckets(1, 60.0, clock=Clock())
    assert buckets.hit("a").allowed
    assert not buckets.peek("a").allowed
    assert buckets.peek("b").allowed
    assert buckets.peek("b").allowed
    assert buckets.hit("b").allowed


def test_key_count_is_capped_refilled_buckets_go_first() -> None:
    clock = Clock()
    buckets = TokenBuckets(2, 60.0, max_keys=3, clock=clock)
    buckets.hit("old")
    clock.now += 120  # "old" is full again: forgetting it changes nothing
    buckets.hit("a")
    buckets.hit("b")
    buckets.hit("c")
    assert len(buckets) == 3
    assert buckets.peek("a").remaining == 1
    for key in ("d", "e"):
        buckets.hit(key)
    assert len(buckets) == 3


def test_tightest_prefers_refusals_then_fewest_remaining() -> None:
    ok_many = Verdict(True, 10, 9, 1.0, 0.0)
    ok_few = Verdict(True, 10, 1, 1.0, 0.0)
    refused = Verdict(False, 10, 0, 1.0, 5.0)
    assert tightest([ok_many, ok_few]) is ok_few
    assert tightest([ok_few, refused, ok_many]) is refused
    assert tightest([]) is None


def test_headers_round_up_and_retry_after_only_on_refusal() -> None:
    assert rate_limit_headers(Verdict(True, 10, 4, 2.1, 0.0)) == {
        "X-RateLimit-Limit": "10",
        "X-RateLimit-Remaining": "4",
        "X-RateLimit-Reset": "3",
    }
    assert rate_limit_headers(Verdict(False, 10, 0, 9.0, 0.2))["Retry-After"] == "1"


def test_limits_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("X_PER_TOKEN", "5")
    monkeypatch.setenv("X_PER_IP", "0")
    monkeypatch.setenv("X_WINDOW_S", "1.5")
    assert RateLimits.from_env("X_") == RateLimits(per_token=5, per_ip=0, window_s=1.5)
    assert RateLimits.from_env("UNSET_PREFIX_") == RateLimits()
    monkeypatch.setenv("X_WINDOW_S", "0")
    with pytest.raises(ValueError):
        RateLimits.from_env("X_")


async def _ok(_request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


async def _missing(_request: web.Request) -> web.Response:
    raise web.HTTPNotFound()


def _app(limits: RateLimits, clock: Clock, limited: list[str]) -> web.Application:
    app = web.Application(
        middlewares=[
            make_rate_limit_middleware(limits, clock=clock, on_limited=limited.append),
            error_middleware,
        ]
    )
    app.router.add_get("/x", _ok)
    app.router.add_get("/missing", _missing)
    app.router.add_get("/healthz", _ok)
    return app


async def test_middleware_limits_per_token_and_per_ip() -> None:
    clock, limited = Clock(), []
    limits = RateLimits(per_token=2, per_ip=5, window_s=60)
    async with TestClient(TestServer(_app(limits, clock, limited))) as client:
        alice = {"Authorization": "Bearer alice-token"}
        first = await client.get("/x", headers=alice)
        assert first.status == 200
        assert first.headers["X-RateLimit-Limit"] == "2"
        assert first.headers["X-RateLimit-Remaining"] == "1"
        assert (await client.get("/x", headers=alice)).status == 200
        refused = await client.get("/x", headers=alice)
        assert refused.status == 429
        assert refused.content_type == "application/problem+json"
        assert (await refused.json())["code"] == "rate_limited"
        assert refused.headers["Retry-After"] == "30"
        assert limited == ["token"]
        # Another token still passes, until the IP's own bucket (5) runs dry.
        bob = {"Authorization": "Bearer bob-token"}
        assert (await client.get("/x", headers=bob)).status == 200
        # Error answers carry the headers too.
        missing = await client.get("/missing")
        assert missing.status == 404
        assert missing.headers["X-RateLimit-Remaining"] == "0"
        assert (await client.get("/x")).status == 429
        assert limited == ["token", "ip"]
        # Health probes are never throttled.
        assert (await client.get("/healthz")).status == 200
        clock.now += 60
        assert (await client.get("/x", headers=alice)).status == 200


async def test_middleware_with_limits_disabled_adds_nothing() -> None:
    clock, limited = Clock(), []
    async with TestClient(
        TestServer(_app(RateLimits(per_token=0, per_ip=0), clock, limited))
    ) as client:
        response = await client.get("/x", headers={"Authorization": "Bearer t"})
        assert response.status == 200
        assert "X-RateLimit-Limit" not in response.headers


def test_login_throttle_counts_failures_per_username_and_attempts_per_ip() -> None:
    clock = Clock()
    throttle = LoginThrottle(LoginLimits(per_username=2, per_ip=4, window_s=60), clock=clock)
    for _ in range(2):
        assert throttle.check("Alice", "10.0.0.1") is None
        throttle.failed("alice")
    refused = throttle.check("ALICE", "10.0.0.2")
    assert refused is not None and refused[0] == "login_username"
    # Successful logins (no failed() call) never lock a username out.
    for _ in range(2):
        assert throttle.check("bob", "10.0.0.1") is None
    refused = throttle.check("carol", "10.0.0.1")
    assert refused is not None and refused[0] == "login_ip"
    clock.now += 60
    assert throttle.check("alice", "10.0.0.1") is None


def test_login_limits_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MB_LOGIN_LIMIT_PER_USERNAME", "3")
    assert LoginLimits.from_env() == LoginLimits(per_username=3)
    monkeypatch.setenv("MB_LOGIN_LIMIT_PER_IP", "-1")
    with pytest.raises(ValueError):
        LoginLimits.from_env()
