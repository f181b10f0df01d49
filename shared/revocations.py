"""Logged-out tokens, known in memory: the revocation check without a round trip.

Every authenticated request of both services used to probe `cmd_revoked_tokens` by primary
key. Logouts are rare and reads are not, so each process keeps the revoked nonces (with their
tokens' expiry, to forget them once the token would fail verification anyway) in a dict:

- loaded when the process's LISTEN connection is (re)established, *after* LISTEN is in place,
  so a revocation is either in the loaded snapshot or announced afterwards;
- kept current by `NOTIFY token_revoked, '<nonce> <expires_unix>'`, which a trigger on
  `cmd_revoked_tokens` sends at the commit of each logout (schemas/sql/050_revocation_notify.sql);
- trusted only while that connection is up: from the moment it is lost until it is back and
  the set reloaded, every check falls back to the database lookup (`shared.auth.token_revoked`).

So a revoked token is refused everywhere as soon as the NOTIFY is delivered (sub-millisecond on
one host), and immediately in the process that handled the logout, which adds it itself.
"""

from __future__ import annotations

import time
from typing import Final

import asyncpg
from aiohttp import web

from shared.auth import TokenClaims, token_revoked
from shared.listener import Listener

CHANNEL: Final = "token_revoked"
# Expired entries are dropped when the dict has doubled since the last sweep: amortized O(1).
_MIN_SWEEP: Final = 1024
_LOAD_SQL: Final = (
    "SELECT nonce, floor(extract(epoch FROM expires_at))::bigint AS expires"
    " FROM cmd_revoked_tokens WHERE expires_at > now()"
)
# A payload we cannot read still revokes its nonce; it is kept as long as any token may live.
_UNKNOWN_EXPIRY: Final = 1 << 62


def parse_payload(payload: str) -> tuple[str, int]:
    """`'<nonce> <expires_unix>'` → (nonce, expires); an unreadable expiry keeps it for good."""
    nonce, _, expires = payload.rpartition(" ")
    if not nonce:
        return payload, _UNKNOWN_EXPIRY
    try:
        return nonce, int(expires)
    except ValueError:
        return nonce, _UNKNOWN_EXPIRY


class Revocations:
    """The process's revoked nonces, and whether they can be trusted right now."""

    def __init__(self) -> None:
        self._expiry: dict[str, int] = {}
        self._live = False
        self._next_sweep = _MIN_SWEEP

    @property
    def live(self) -> bool:
        return self._live

    def cached(self, claims: TokenClaims) -> bool | None:
        """The answer from memory, or None when memory may be stale (ask the database)."""
        return claims.nonce in self._expiry if self._live else None

    async def is_revoked(self, db: asyncpg.Pool | asyncpg.Connection, claims: TokenClaims) -> bool:
        answer = self.cached(claims)
        return await token_revoked(db, claims) if answer is None else answer

    def add(self, nonce: str, expires_at: int, now: float | None = None) -> None:
        """Remember a revocation (a notification, or this process's own logout)."""
        self._expiry[nonce] = expires_at
        if len(self._expiry) >= self._next_sweep:
            self.sweep(time.time() if now is None else now)

    def sweep(self, now: float) -> None:
        """Forget tokens that have expired: verification refuses them without our help."""
        self._expiry = {n: e for n, e in self._expiry.items() if e > now}
        self._next_sweep = max(_MIN_SWEEP, 2 * len(self._expiry))

    def __contains__(self, nonce: object) -> bool:
        return nonce in self._expiry

    # ------------------------------------------------------------ listener hooks

    def notified(self, payload: str) -> None:
        self.add(*parse_payload(payload))

    def lost(self) -> None:
        self._live = False

    async def reload(self, conn: asyncpg.Connection) -> None:
        """Load every unexpired revocation; LISTEN is already active on `conn`, so anything
        committed after this snapshot arrives as a notification. Entries already known are
        kept (a revocation never ends before its token does)."""
        for row in await conn.fetch(_LOAD_SQL):
            self._expiry[row["nonce"]] = row["expires"]
        self.sweep(time.time())
        self._live = True

    def listen(self, listener: Listener) -> None:
        listener.on(CHANNEL, self.notified, on_connect=self.reload, on_lost=self.lost)


REVOCATIONS: Final = web.AppKey("revocations", Revocations)
