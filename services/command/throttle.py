"""Login throttling: password guessing is slowed per username and per client IP.

Per IP every attempt counts; per username only failed ones, so a user who types the right
password is never locked out by their own logins, while guessing against one account stops at
the limit whichever addresses the guesses come from.
"""

from __future__ import annotations

import os
import time
from typing import Final

import msgspec
from aiohttp import web

from shared.ratelimit import Clock, TokenBuckets, Verdict, too_many_requests


class LoginLimits(msgspec.Struct, frozen=True, kw_only=True):
    """Attempts per `window_s`; 0 disables a limit. Per IP it stays above what a benchmark
    logging in many users from one address needs (argon2 caps logins near 50/s per core)."""

    per_username: int = 10
    per_ip: int = 6_000
    window_s: float = 60.0

    @classmethod
    def from_env(cls, prefix: str = "MB_LOGIN_LIMIT_") -> LoginLimits:
        """Read `<prefix>PER_USERNAME`, `<prefix>PER_IP` and `<prefix>WINDOW_S`."""
        default = cls()
        limits = cls(
            per_username=int(os.environ.get(prefix + "PER_USERNAME") or default.per_username),
            per_ip=int(os.environ.get(prefix + "PER_IP") or default.per_ip),
            window_s=float(os.environ.get(prefix + "WINDOW_S") or default.window_s),
        )
        if limits.per_username < 0 or limits.per_ip < 0 or limits.window_s <= 0:
            raise ValueError(f"{prefix}*: limits must be >= 0 and the window > 0")
        return limits


class LoginThrottle:
    def __init__(self, limits: LoginLimits, clock: Clock = time.monotonic) -> None:
        self._by_user = (
            TokenBuckets(limits.per_username, limits.window_s, clock=clock)
            if limits.per_username
            else None
        )
        self._by_ip = (
            TokenBuckets(limits.per_ip, limits.window_s, clock=clock) if limits.per_ip else None
        )

    def check(self, username: str, ip: str) -> tuple[str, Verdict] | None:
        """Spend one attempt of `ip`; the refusing scope and its verdict, or None to go on."""
        if self._by_ip is not None:
            verdict = self._by_ip.hit(ip)
            if not verdict.allowed:
                return "login_ip", verdict
        if self._by_user is not None:
            verdict = self._by_user.peek(username.lower())
            if not verdict.allowed:
                return "login_username", verdict
        return None

    def failed(self, username: str) -> None:
        if self._by_user is not None:
            self._by_user.hit(username.lower())


def refusal(scope: str, verdict: Verdict) -> web.Response:
    field = "username" if scope == "login_username" else None
    return too_many_requests(verdict, "too many login attempts; wait and retry", field)


LOGIN_THROTTLE: Final = web.AppKey("login_throttle", LoginThrottle)
