"""Concurrent home-timeline reads share one statement (repository.home_pages).

Under load most of a home page's cost is per statement, not per row: the round trip (on these
2 cores, the socket write that wakes the other process is the costliest call in the query
process), asyncpg's per-call work, PostgreSQL's executor start. Pages requested while
earlier ones are being read go together, up to repository.HOME_BATCH per statement, through
the group commit the command service uses for posts (shared/group_commit.py): an idle service
reads each page at once, alone, as before; batching only happens when requests queue anyway.
Measured on the small graph, one connection: 500 us per page alone, 358 in pairs, 287 in
eights, and a third of the client-side CPU per page.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import asyncpg

from services.query import repository
from services.query.pagination import Page
from services.query.pull_state import PullAuthors
from shared.group_commit import GroupCommit, Pending

Read = tuple[int, Page]

# At shutdown, reads already queued get this long to finish (aiohttp has waited for handlers).
CLOSE_TIMEOUT_S: Final = 2.0


class HomeReads:
    """`read` a home page; concurrent reads are batched into one statement."""

    def __init__(
        self, pool: asyncpg.Pool, concurrency: int, pulls: PullAuthors | None = None
    ) -> None:
        self._pool = pool
        self._pulls = pulls
        # One statement per pool connection at most, so the other endpoints still get one.
        self._group: GroupCommit[Read, list[asyncpg.Record]] = GroupCommit(
            self._flush,
            max_batch=repository.HOME_BATCH,
            concurrency=max(1, concurrency - 1),
            name="home-reads",
        )

    async def read(self, viewer: int, page: Page) -> list[asyncpg.Record]:
        """Rows `(key, item)` of the viewer's home page, as repository.home_timeline."""
        return await self._group.submit((viewer, page))

    async def close(self, timeout_s: float = CLOSE_TIMEOUT_S) -> None:
        await self._group.close(timeout_s)

    async def _flush(self, batch: Sequence[Pending[Read, list[asyncpg.Record]]]) -> None:
        pulls = self._pulls is None or self._pulls.any
        pages = await repository.home_pages(self._pool, [p.item for p in batch], pulls)
        for pending, rows in zip(batch, pages, strict=True):
            pending.resolve(rows)
