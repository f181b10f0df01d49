"""Passwords and bearer tokens.

Passwords: argon2id (argon2-cffi defaults, RFC 9106's second recommended profile).
Tokens: `<user_id>.<expires_unix>.<nonce>.<hmac>` signed with HMAC-SHA256 under the shared secret;
both services verify them without a database round trip.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from typing import Any, Protocol

import msgspec
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_hasher = PasswordHasher()
# Hashing a dummy on unknown usernames keeps login time the same whether the user exists or not.
_DUMMY_HASH = _hasher.hash("not-a-real-password")


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False


class TokenClaims(msgspec.Struct, frozen=True):
    user_id: int
    expires_at: int
    nonce: str


def _sign(secret: str, body: str) -> str:
    mac = hmac.new(secret.encode(), body.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def issue_token(secret: str, user_id: int, ttl_s: int, now: float | None = None) -> tuple[str, int]:
    """Return (token, expires_at_unix)."""
    expires = int((now if now is not None else time.time()) + ttl_s)
    body = f"{user_id}.{expires}.{secrets.token_urlsafe(12)}"
    return f"{body}.{_sign(secret, body)}", expires


def verify_token(secret: str, token: str, now: float | None = None) -> TokenClaims | None:
    """The claims of a valid, unexpired token; None for anything else."""
    parts = token.split(".")
    if len(parts) != 4:
        return None
    body = ".".join(parts[:3])
    if not hmac.compare_digest(_sign(secret, body), parts[3]):
        return None
    try:
        user_id, expires = int(parts[0]), int(parts[1])
    except ValueError:
        return None
    if expires <= (now if now is not None else time.time()):
        return None
    return TokenClaims(user_id, expires, parts[2])


class _Fetcher(Protocol):
    """An asyncpg connection or pool: anything with `fetchval`."""

    async def fetchval(self, query: str, *args: Any) -> Any: ...


async def token_revoked(conn: _Fetcher, claims: TokenClaims) -> bool:
    """True when the token carrying `claims` was logged out (`cmd_revoked_tokens`).

    One primary-key lookup. Requests normally ask the process's in-memory set instead
    (shared/revocations.py); this is its fallback while that set cannot be trusted.
    """
    return bool(
        await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM cmd_revoked_tokens WHERE nonce = $1)", claims.nonce
        )
    )
