"""In-process rate limiting: token buckets and an aiohttp middleware built on them.

Each key (a bearer token, a client IP, a username at login) owns a bucket of `limit` tokens that
refills continuously at `limit / window_s` tokens per second; a request spends one token. A
bucket allows bursts up to `limit` and a steady rate of `limit` per window, and needs two floats
per key — cheaper than a sliding log and without a fixed window's double burst at the boundary.

The state lives in one process, so N instances behind a balancer allow up to N times the limit;
that is accepted here (the limits guard against abuse, not for billing). The number of keys is
capped: a client cycling through random tokens cannot grow memory without bound.

Every answer passing the middleware carries `X-RateLimit-Limit`, `X-RateLimit-Remaining` and
`X-RateLimit-Reset` (seconds until the bucket is full again) of the tightest bucket consulted; a
refusal is a 429 problem+json with `Retry-After` (seconds until one token is back).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterable
from typing import Final

import msgspec
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from shared.http import ApiError, problem_response

Clock = Callable[[], float]

# Paths probed by orchestrators and scrapers; throttling them would only make a node look dead.
DEFAULT_EXEMPT_PATHS: Final = frozenset({"/healthz", "/readyz", "/metrics"})


class RateLimits(msgspec.Struct, frozen=True, kw_only=True):
    """Requests allowed per `window_s`, per bearer token and per client IP; 0 disables one.

    The defaults are far above what one honest client sends (tests and benchmarks drive
    thousands of requests per second from 127.0.0.1), so only a deployment that sets them
    tighter throttles anyone.
    """

    per_token: int = 600_000
    per_ip: int = 3_000_000
    window_s: float = 60.0
    max_keys: int = 100_000

    @classmethod
    def from_env(cls, prefix: str = "MB_RATE_LIMIT_") -> RateLimits:
        """Read `<prefix>PER_TOKEN`, `<prefix>PER_IP`, `<prefix>WINDOW_S`, `<prefix>MAX_KEYS`."""
        default = cls()

        def read(name: str, fallback: float) -> str:
            value = os.environ.get(prefix + name)
            return value if value else str(fallback)

        limits = cls(
            per_token=int(read("PER_TOKEN", default.per_token)),
            per_ip=int(read("PER_IP", default.per_ip)),
            window_s=float(read("WINDOW_S", default.window_s)),
            max_keys=int(read("MAX_KEYS", default.max_keys)),
        )
        if limits.per_token < 0 or limits.per_ip < 0 or limits.max_keys < 1:
            raise ValueError(f"{prefix}*: limits must be >= 0 and MAX_KEYS >= 1")
        if limits.window_s <= 0:
            raise ValueError(f"{prefix}WINDOW_S must be > 0")
        return limits


class Verdict(msgspec.Struct, frozen=True):
    allowed: bool
    limit: int
    remaining: int
    # Seconds until the bucket is full again, and until the next request would be allowed.
    reset_s: float
    retry_after_s: float


class TokenBuckets:
    """Token buckets for many keys with one shared limit; pure apart from the injected clock."""

    def __init__(
        self, limit: int, window_s: float, *, max_keys: int = 100_000, clock: Clock = time.monotonic
    ) -> None:
        if limit < 1 or window_s <= 0:
            raise ValueError("limit must be >= 1 and window_s > 0")
        self.limit = limit
        self.rate = limit / window_s  # tokens per second
        self.max_keys = max_keys
        self._clock = clock
        # key -> (tokens, last refill time); dict order is insertion order, oldest first.
        self._buckets: dict[str, tuple[float, float]] = {}

    def __len__(self) -> int:
        return len(self._buckets)

    def _level(self, key: str, now: float) -> float:
        state = self._buckets.get(key)
        if state is None:
            return float(self.limit)
        tokens, at = state
        return min(float(self.limit), tokens + (now - at) * self.rate)

    def _verdict(self, allowed: bool, tokens: float) -> Verdict:
        missing = self.limit - tokens
        return Verdict(
            allowed=allowed,
            limit=self.limit,
            remaining=max(0, math.floor(tokens)),
            reset_s=missing / self.rate,
            retry_after_s=0.0 if tokens >= 1 else (1 - tokens) / self.rate,
        )

    def peek(self, key: str) -> Verdict:
        """Would a request under `key` be allowed now? Spends nothing."""
        tokens = self._level(key, self._clock())
        return self._verdict(tokens >= 1, tokens)

    def hit(self, key: str) -> Verdict:
        """Spend one token under `key` if there is one."""
        now = self._clock()
        tokens = self._level(key, now)
        allowed = tokens >= 1
        if allowed:
            tokens -= 1
        self._store(key, tokens, now)
        return self._verdict(allowed, tokens)

    def _store(self, key: str, tokens: float, now: float) -> None:
        # Re-insert so the dict stays ordered by last use; the eviction below drops the stalest.
        self._buckets.pop(key, None)
        self._buckets[key] = (tokens, now)
        if len(self._buckets) > self.max_keys:
            self._evict(now)

    def _evict(self, now: float) -> None:
        # First forget buckets that have refilled (forgetting them changes nothing); if that is
        # not enough, drop the least recently used, which errs towards allowing.
        for key in [k for k in self._buckets if self._level(k, now) >= self.limit]:
            del self._buckets[key]
        excess = len(self._buckets) - self.max_keys
        for key in list(self._buckets)[: max(0, excess)]:
            del self._buckets[key]


def tightest(verdicts: Iterable[Verdict]) -> Verdict | None:
    """The verdict to report: a refusal if any, else the one with the fewest tokens left."""
    chosen: Verdict | None = None
    for v in verdicts:
        if chosen is None or (v.allowed, v.remaining) < (chosen.allowed, chosen.remaining):
            chosen = v
    return chosen


def rate_limit_headers(verdict: Verdict) -> dict[str, str]:
    headers = {
        "X-RateLimit-Limit": str(verdict.limit),
        "X-RateLimit-Remaining": str(verdict.remaining),
        "X-RateLimit-Reset": str(math.ceil(verdict.reset_s)),
    }
    if not verdict.allowed:
        headers["Retry-After"] = str(max(1, math.ceil(verdict.retry_after_s)))
    return headers


def too_many_requests(verdict: Verdict, detail: str, field: str | None = None) -> web.Response:
    return problem_response(
        ApiError(429, "rate_limited", detail, field), headers=rate_limit_headers(verdict)
    )


def bearer_token(request: web.BaseRequest) -> str | None:
    """The raw bearer token, unverified: the bucket key, so a forged token is limited too."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def make_rate_limit_middleware(
    limits: RateLimits,
    *,
    exempt_paths: frozenset[str] = DEFAULT_EXEMPT_PATHS,
    on_limited: Callable[[str], None] | None = None,
    clock: Clock = time.monotonic,
) -> Middleware:
    """A middleware limiting requests per bearer token and per client IP.

    Put it outside the error middleware so error answers carry the headers too. `on_limited`
    is called with "token" or "ip" on each refusal (e.g. to count 429s in a metric). The client
    IP is the socket peer; behind a proxy, run one limiter at the proxy instead.
    """
    by_token = (
        TokenBuckets(limits.per_token, limits.window_s, max_keys=limits.max_keys, clock=clock)
        if limits.per_token
        else None
    )
    by_ip = (
        TokenBuckets(limits.per_ip, limits.window_s, max_keys=limits.max_keys, clock=clock)
        if limits.per_ip
        else None
    )

    @web.middleware
    async def rate_limit_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in exempt_paths:
            return await handler(request)
        verdicts: list[tuple[str, Verdict]] = []
        token = bearer_token(request)
        if by_token is not None and token is not None:
            verdicts.append(("token", by_token.hit(token)))
        if by_ip is not None:
            verdicts.append(("ip", by_ip.hit(request.remote or "unknown")))
        for scope, verdict in verdicts:
            if not verdict.allowed:
                if on_limited is not None:
                    on_limited(scope)
                return too_many_requests(verdict, f"too many requests for this {scope}; slow down")
        report = tightest(v for _, v in verdicts)
        if report is None:
            return await handler(request)
        headers = rate_limit_headers(report)
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            exc.headers.update(headers)
            raise
        # A streamed answer (already prepared) has sent its headers; it goes without them.
        if not response.prepared:
            response.headers.update(headers)
        return response

    return rate_limit_middleware
