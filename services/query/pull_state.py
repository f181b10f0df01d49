"""Whether any author's posts are delivered by pull yet (hybrid fan-out), so that home reads
pay for merging pulled posts only once there are some.

The home statement that merges pulled posts (a UNION with a second, usually empty branch)
costs ~10 % more PostgreSQL time per read than the push-only one (raw asyncpg loop over the
default benchmark's read dataset: 1,824-1,879 against 2,027 reads/s, medians of 4 slices).
A deployment where no author has crossed MB_PULL_THRESHOLD need not pay that.

`pull_authors` only grows (until a rebuild swaps tables), so "there are some" is always a safe
answer; "none" is trusted only while the process's LISTEN connection is up and was loaded after
it started listening: the projector notifies `pull_authors` in the transaction that adds one,
before its `projector_progress` notification, so a reader waiting for a position that contains
a pulled post is woken after the flag is set.
"""

from __future__ import annotations

from typing import Final

import asyncpg
from aiohttp import web

from shared.listener import Listener

CHANNEL: Final = "pull_authors"


class PullAuthors:
    def __init__(self) -> None:
        self._none = False  # "no pull author exists", trusted only while listening

    @property
    def any(self) -> bool:
        """True unless it is known that no author's posts are pulled."""
        return not self._none

    def listen(self, listener: Listener) -> None:
        listener.on(CHANNEL, self._some, on_connect=self._load, on_lost=self._some)

    def _some(self, _payload: str = "") -> None:
        # A pull author was added, or notifications may be missed from now on.
        self._none = False

    async def _load(self, conn: asyncpg.Connection) -> None:
        self._none = not await conn.fetchval("SELECT EXISTS (SELECT 1 FROM pull_authors)")


PULL_AUTHORS: Final = web.AppKey("pull_authors", PullAuthors)
