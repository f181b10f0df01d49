"""Amortized timeline trimming (DESIGN.md §4), off the batches' path.

Fan-out only ever adds rows; a timeline is cut back to the cap once it has grown past
cap * 1.25. Whose timelines grew is remembered per batch and visited every TRIM_EVERY batches
but at most every TRIM_MIN_INTERVAL_S (sooner when TRIM_PENDING_LIMIT users piled up), in a
transaction of its own running beside the batches. Inside a batch's transaction, a trim over a
wide author's followers held every post of that batch back: the default benchmark's one post
in 30 that took 2-3 s to become visible. Trimming is idempotent cleanup that nothing reads
(pages are the newest rows), so it needs no offsets: if it fails, the users are kept for the
next visit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import asyncpg

from services.projector import store
from services.projector.stats import Stats

log = logging.getLogger("microblog.projector")

TRIM_EVERY = 50
TRIM_PENDING_LIMIT = 20_000
# And not more often than this: a trim's cost is per candidate user (one index probe 1.25 caps
# deep), and live, with small batches every ~100 ms, 50 batches came every few seconds and
# each trim re-examined nearly every user a stream of posts had reached. In the default
# benchmark's mixed load (100 posts/s among 1,000 req/s) the trim statement was a third of
# PostgreSQL's active time (pg_stat_activity sampled every 5 ms) and the load achieved 870 of
# 1,000 req/s, 990 with trims off. Between two trims a timeline only grows by what arrived
# meanwhile, which pages never read.
TRIM_MIN_INTERVAL_S = 30.0
# A visit goes through its users in chunks, each its own short transaction, and pauses after
# each so that it takes at most TRIM_DUTY of the time it spans: one statement over every user
# of the default benchmark (10 K) kept PostgreSQL busy for over a second, and the reads and
# posts that queued behind it made the tail latency. Chunks of 500 users with 20 ms pauses
# still did: a visit of ~1.6 s of near-saturation landed inside the mixed load's 5 s window
# (pg_stat_activity every 10 ms: the trim in most samples from 1.5 to 2.5 s; request p50 went
# from ~15 ms to ~1 s and took two seconds to drain). Spread at 10 %, the same work runs over
# ~16 s, well inside the interval between visits; a chunk's wall time includes waiting for
# CPU, so a busier machine stretches the visit further. The pile of a visit still running is
# kept for the next one. After the benchmark's POST figure (every timeline grown past the cap)
# a chunk of 100 users took ~200 ms under the mixed load, and each one started a stall of the
# requests (pg_stat_activity every 10 ms beside per-250 ms latencies); chunks of 20 make the
# same duty out of shorter bursts (mixed p99 per run 245/77/56 ms against 357/512/257, one
# invocation of posts, visibility and mixed each).
TRIM_CHUNK_USERS = 20
TRIM_DUTY = 0.1
TRIM_CHUNK_PAUSE_S = 0.02  # at least, between chunks


def trim_pause(chunk_s: float, duty: float = TRIM_DUTY) -> float:
    """Seconds to wait after a chunk that took `chunk_s`, so that chunks fill `duty` of the
    visit's time (and never less than TRIM_CHUNK_PAUSE_S)."""
    return max(TRIM_CHUNK_PAUSE_S, chunk_s * (1.0 - duty) / duty)


class Trimmer:
    def __init__(self, pool: asyncpg.Pool, timeline_cap: int, stats: Stats) -> None:
        self.pool = pool
        self.timeline_cap = timeline_cap
        self.stats = stats
        self._users: set[int] = set()
        self._authors: set[int] = set()
        self._batches = 0
        self._last = time.monotonic()
        self._task: asyncio.Task[None] | None = None

    def note(self, applied: store.Applied) -> None:
        """Remember a committed batch's grown timelines; start a trim when one is due and
        none is running (a running one keeps the pile for the next)."""
        self._users |= applied.users
        self._authors |= applied.wide_authors
        self._batches += 1
        now = time.monotonic()
        due = (self._batches >= TRIM_EVERY and now - self._last >= TRIM_MIN_INTERVAL_S) or len(
            self._users
        ) >= TRIM_PENDING_LIMIT
        if not due or (self._task is not None and not self._task.done()):
            return
        users, authors = self._users, self._authors
        self._users, self._authors, self._batches, self._last = set(), set(), 0, now
        if users or authors:
            self._task = asyncio.create_task(self._trim(users, authors))

    async def _trim(self, users: set[int], authors: set[int]) -> None:
        pending: list[int] = []
        done = 0
        try:
            if authors:
                followers = await self.pool.fetchval(store.FOLLOWERS_OF, sorted(authors))
                users = users | set(followers or ())
            pending = sorted(users)
            for done in range(0, len(pending), TRIM_CHUNK_USERS):
                chunk = pending[done : done + TRIM_CHUNK_USERS]
                started = time.monotonic()
                async with self.pool.acquire() as conn, conn.transaction():
                    deleted = await store.trim(conn, chunk, (), self.timeline_cap)
                self.stats.timeline_rows_trimmed += deleted
                if done + TRIM_CHUNK_USERS < len(pending):
                    await asyncio.sleep(trim_pause(time.monotonic() - started))
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            # A deadlock with a batch's removals, or the database away: the users not yet
            # trimmed wait for the next visit.
            log.warning("timeline trim failed (%r); retried with the next one", exc)
            if pending:
                self._users.update(pending[done:])
            else:
                self._users |= users
                self._authors |= authors

    async def idle(self) -> None:
        """Wait for the running trim, if any (tests; shutdown)."""
        if self._task is not None:
            await asyncio.shield(self._task)

    async def close(self) -> None:
        """Stop a running trim; it rolls back, and nothing depends on it having run."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
