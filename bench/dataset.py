"""Bulk loading of the synthetic graph straight into the read-model tables.

The read figures do not need the graph to travel through Kafka: users, follows and posts are
COPYed into `users`, `follows` and `posts`, and the home timelines are materialized with one
bare INSERT … SELECT (exactly what the fan-out would have written). Only the fan-out and
rebuild figures push real events through the projector.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime

import asyncpg
import numpy as np

from bench.graph import I64, Graph
from shared.ids import uuid7

CHUNK = 200_000
# One version for every bulk-loaded edge: last-writer-wins versions only matter between events.
BULK_VERSION: uuid.UUID = uuid7(1_700_000_000_000)

BARE_FANOUT = """
INSERT INTO home_timeline (user_id, post_id, author_id)
SELECT f.follower_id, p.post_id, p.author_id
  FROM posts p JOIN follows f ON f.followee_id = p.author_id AND f.active
UNION ALL
SELECT p.author_id, p.post_id, p.author_id FROM posts p
"""


# The projector keeps each timeline to MB_TIMELINE_CAP rows (default 800) with amortized trims;
# bulk-loaded timelines are cut the same way, or the first trim pass after a write would delete
# millions of rows and pose as projector latency.
TRIM_TO_CAP = """
DELETE FROM home_timeline h
 USING (SELECT user_id, post_id,
               row_number() OVER (PARTITION BY user_id ORDER BY post_id DESC) AS rn
          FROM home_timeline) r
 WHERE h.user_id = r.user_id AND h.post_id = r.post_id AND r.rn > $1
"""


def _ts(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


async def load_users(conn: asyncpg.Connection, graph: Graph) -> None:
    now = datetime.now(UTC)
    records = [(i, f"user{i}", f"User {i}", now) for i in range(1, graph.users + 1)]
    await conn.copy_records_to_table(
        "users", records=records, columns=["user_id", "username", "display_name", "created_at"]
    )


async def load_follows(conn: asyncpg.Connection, graph: Graph, progress: object = None) -> None:
    now = datetime.now(UTC)
    src, dst = graph.follower.tolist(), graph.followee.tolist()
    for start in range(0, len(src), CHUNK):
        end = min(start + CHUNK, len(src))
        records = [(src[i], dst[i], True, BULK_VERSION, now) for i in range(start, end)]
        await conn.copy_records_to_table(
            "follows",
            records=records,
            columns=["follower_id", "followee_id", "active", "version", "since"],
        )
        if progress is not None:
            progress.update(end - start)  # type: ignore[attr-defined]


async def load_posts(conn: asyncpg.Connection, ids: I64, authors: I64, created_ms: I64) -> None:
    records = [
        (
            pid,
            aid,
            f"bench post {pid} by user {aid}: the quick brown fox jumps over the dog",
            _ts(c),
        )
        for pid, aid, c in zip(ids.tolist(), authors.tolist(), created_ms.tolist(), strict=True)
    ]
    for start in range(0, len(records), CHUNK):
        await conn.copy_records_to_table(
            "posts",
            records=records[start : start + CHUNK],
            columns=["post_id", "author_id", "text", "created_at"],
        )


async def trim_to_cap(conn: asyncpg.Connection, cap: int) -> int:
    status = await conn.execute(TRIM_TO_CAP, cap)
    return int(status.rsplit(" ", 1)[-1])


async def truncate_posts(conn: asyncpg.Connection) -> None:
    await conn.execute("TRUNCATE home_timeline, posts")


async def bare_fanout(conn: asyncpg.Connection) -> tuple[int, float]:
    """Materialize every timeline from posts and follows in one statement: (rows, seconds)."""
    t0 = time.perf_counter()
    status = await conn.execute(BARE_FANOUT)
    return int(status.rsplit(" ", 1)[-1]), time.perf_counter() - t0


async def deep_viewers(conn: asyncpg.Connection, depth: int, limit: int) -> list[tuple[int, int]]:
    """Up to `limit` (viewer, max_id) pairs whose timelines are deeper than `depth` + a page."""
    rows = await conn.fetch(
        """
        SELECT user_id FROM home_timeline GROUP BY user_id HAVING count(*) > $1
        ORDER BY user_id LIMIT $2
        """,
        depth + 40,
        limit,
    )
    out = []
    for r in rows:
        max_id = await conn.fetchval(
            "SELECT post_id FROM home_timeline WHERE user_id = $1"
            " ORDER BY post_id DESC OFFSET $2 LIMIT 1",
            r["user_id"],
            depth - 1,
        )
        out.append((int(r["user_id"]), int(max_id)))
    return out


def np_sample(values: I64, n: int, seed: int) -> list[int]:
    rng = np.random.default_rng(seed)
    return [int(v) for v in rng.choice(values, size=min(n, values.size), replace=False)]
