"""Hybrid fan-out, the command side: whether an author has at least MB_PULL_THRESHOLD active
followers, so that their new posts are delivered by pull (shared.events.delivery_for).

The answer goes into the post.created event, so the projector (and a rebuild from offset 0)
follows the log instead of a follower count that depends on how partitions interleave. It
reads the projector's `follows`, counting at most `threshold` rows, and is kept per author
for TTL_S: follower counts move slowly, and a post decided on a count a minute old is still
delivered (either way reaches every follower).
"""

from __future__ import annotations

import time
from typing import Final

import asyncpg
from aiohttp import web

# Index-only on follows_followee_active, stopping at the threshold.
_AT_LEAST: Final = """
SELECT count(*) FROM (
    SELECT 1 FROM follows WHERE followee_id = $1 AND active LIMIT $2
) f
"""

TTL_S: Final = 60.0
# Entries kept before the cache starts over (each is a few dozen bytes).
MAX_ENTRIES: Final = 100_000


class WideAuthors:
    """Which authors have at least `threshold` active followers (0: none ever)."""

    def __init__(self, threshold: int) -> None:
        self.threshold = threshold
        self._cache: dict[int, tuple[float, bool]] = {}

    async def is_wide(self, db: asyncpg.Pool | asyncpg.Connection, author_id: int) -> bool:
        if self.threshold <= 0:
            return False
        now = time.monotonic()
        hit = self._cache.get(author_id)
        if hit is not None and hit[0] > now:
            return hit[1]
        count = await db.fetchval(_AT_LEAST, author_id, self.threshold)
        wide = int(count or 0) >= self.threshold
        if len(self._cache) >= MAX_ENTRIES:
            self._cache.clear()
        self._cache[author_id] = (now + TTL_S, wide)
        return wide


WIDE_AUTHORS: Final = web.AppKey("wide_authors", WideAuthors)
