"""Read-model queries of posts, timelines and threads (accounts: account_reads.py;
notifications and the stream's catch-up: stream_reads.py). Every statement is parameterised
and constant, so asyncpg prepares it once per connection and reuses the plan.

Reads fetch facts; the visibility decision is shared.policy (single rows, via `relations`) or
its SQL twins in services/query/policy.py (pages), never ad-hoc conditions here.

Post lists are built in two steps inside one statement: an inner query picks the page as rows
`(key, post_id, repost_id, reposter_id)` — `key` is what the page is ordered and bounded by (a
post id, or a repost's own id) — and `_hydrate` joins the post, its author, the reposter and
the audience name to it. The paged lists served as they are (home, profile, public, tag) have
PostgreSQL build each item's JSON too (page_sql.py); the others decide or reshape in Python.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Final, TypeAlias

import asyncpg

from services.query.page_sql import JOINS, V, page_json
from services.query.pagination import Page
from services.query.policy import Relations, blocked_sql, feed_sql, muted_sql, visible_sql

Db: TypeAlias = asyncpg.Pool | asyncpg.Connection

# What an unreachable, restarting or stuck PostgreSQL raises through asyncpg.
UNAVAILABLE: Final = (
    OSError,
    TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.CannotConnectNowError,
    # A connection whose backend was terminated while idle can surface the server's
    # asynchronous error as a protocol-state error on its next use; the pool drops it.
    asyncpg.exceptions.InternalClientError,
)


_POST_COLUMNS: Final = """
p.post_id, p.author_id, p.text, p.created_at, p.edited_at, p.visibility, p.audience_id,
p.in_reply_to_id, p.conversation_id, p.quote_of_id, p.mentions, p.mention_names, p.hashtags,
p.links, p.media::text AS media, p.replies_count, p.reposts_count, p.likes_count,
u.username, u.display_name, u.avatar_url, aud.name AS audience_name
"""


def _hydrate(inner: str, order: str = "DESC") -> str:
    return f"""
WITH page AS ({inner})
SELECT page.key, page.repost_id, page.reposter_id, {_POST_COLUMNS},
       ru.username AS r_username, ru.display_name AS r_display_name,
       ru.avatar_url AS r_avatar_url
FROM page {JOINS}
ORDER BY page.key {order}
"""


# The timeline read DESIGN.md §4 measures: one range scan of the home_timeline primary key
# (user_id, post_id) walked backwards plus primary-key joins. The policy is checked again at read
# time because a block, mute or unfollow may be newer than the rows the projector has not
# removed yet. A repost row carries its own id as post_id and the shared post in
# reposted_post_id; it shows only while the repost exists and its reposter is neither blocked
# nor muted.
# The reposts lookup is a LATERAL subquery fenced with OFFSET 0 so it can only be a per-row
# probe: as a plain LEFT JOIN the generic plan (parameters unknown, the range on post_id
# estimated at ~2 rows) hash-joined the small reposts table, which loses the index order, so it
# read the user's whole timeline and sorted it: 2.5 ms per page instead of 0.8 ms (small bench).
#
# Hybrid fan-out: posts of pull authors (delivery "pull") have no rows in their followers'
# timelines; the second branch merges them in, one backwards range scan of `posts_pulled` per
# pull author the viewer follows (`pulled_follows`: for almost every viewer an empty range
# probe). Blocks and mutes are checked once per author there, so only the page's candidates
# are fetched from `posts` and checked with the policy again. A repost row of a pulled post
# steps aside while the viewer follows its author, so the post still shows once.
def _home_inner(
    order: str,
    v: str = V,
    max_id: str = "$2",
    since_id: str = "$3",
    limit: str = "$4",
    pull: bool = True,
) -> str:
    # While the viewer follows its author, a repost row of a pulled post steps aside.
    steps_aside = (
        f"""
       AND NOT (p.pulled AND EXISTS (SELECT 1 FROM pulled_follows pf
                                     WHERE pf.follower_id = {v} AND pf.author_id = p.author_id))"""
        if pull
        else ""
    )
    pushed = f"""
SELECT h.post_id AS key, p.post_id, r.repost_id, r.reposter_id
FROM home_timeline h
JOIN posts p ON p.post_id = coalesce(h.reposted_post_id, h.post_id)
LEFT JOIN LATERAL (SELECT r.repost_id, r.reposter_id FROM reposts r
                   WHERE h.reposted_post_id IS NOT NULL AND r.repost_id = h.post_id
                   OFFSET 0) r ON true
WHERE h.user_id = {v} AND h.post_id < {max_id} AND h.post_id > {since_id}
  AND {feed_sql(v)}
  AND (h.reposted_post_id IS NULL OR (r.repost_id IS NOT NULL
       AND NOT {blocked_sql(v, "r.reposter_id")}
       AND (r.reposter_id = {v} OR NOT {muted_sql(v, "r.reposter_id")}){steps_aside}))
ORDER BY h.post_id {order}
LIMIT {limit}
"""
    if not pull:
        # No author's posts are pulled (services/query/pull_state.py): no merge to pay for.
        return pushed
    return f"""
({pushed})
UNION ALL
(SELECT p.post_id AS key, p.post_id, NULL::bigint, NULL::bigint
FROM (SELECT c.post_id
      FROM pulled_follows pf
      CROSS JOIN LATERAL (SELECT c.post_id FROM posts c
                          WHERE c.author_id = pf.author_id AND c.pulled
                            AND c.post_id < {max_id} AND c.post_id > {since_id}
                          ORDER BY c.post_id {order} LIMIT {limit}) c
      WHERE pf.follower_id = {v} AND pf.author_id <> {v}
        AND NOT {blocked_sql(v, "pf.author_id")} AND NOT {muted_sql(v, "pf.author_id")}
      ORDER BY c.post_id {order}
      LIMIT {limit}) c
JOIN posts p ON p.post_id = c.post_id
WHERE {feed_sql(v)})
ORDER BY key {order}
LIMIT {limit}
"""


_HOME: Final = page_json(_home_inner("DESC"))
_HOME_PUSHED: Final = page_json(_home_inner("DESC", pull=False))
# The stream reads forwards from its cursor.
_HOME_AFTER: Final = _hydrate(_home_inner("ASC"), "ASC")

# Up to HOME_BATCH home pages in one statement, for concurrent requests (home_reads.py): slot i
# is parameters $4i+1..$4i+4 (viewer, max_id, since_id, limit), an unused slot has a NULL
# viewer and reads nothing. Slots are a VALUES list, not arrays, so the planner knows there are
# HOME_BATCH of them with or without the values and settles on one generic plan; with unnest
# of array parameters it re-planned every execution (1-2 ms) as a custom plan looked cheaper.
HOME_BATCH: Final = 8
_SLOTS: Final = ", ".join(
    f"(${4 * i + 1}::bigint, ${4 * i + 2}::bigint, ${4 * i + 3}::bigint, ${4 * i + 4}::int, {i})"
    for i in range(HOME_BATCH)
)


def _home_batch(pull: bool) -> str:
    inner = _home_inner("DESC", "q.viewer", "q.max_id", "q.since_id", "q.lim", pull)
    return f"""
SELECT q.slot, page.key, page.item
FROM (VALUES {_SLOTS}) q(viewer, max_id, since_id, lim, slot)
CROSS JOIN LATERAL ({page_json(inner, "q.viewer")}) page
ORDER BY q.slot, page.key DESC
"""


_HOME_BATCH: Final = _home_batch(pull=True)
_HOME_BATCH_PUSHED: Final = _home_batch(pull=False)

# A profile: the author's posts and their reposts of posts the viewer may view, merged by key.
# Each branch is a backwards range scan (posts_author, reposts_reposter) cut to the limit.
_USER_INNER: Final = f"""
(SELECT p.post_id AS key, p.post_id, NULL::bigint AS repost_id, NULL::bigint AS reposter_id
 FROM posts p
 WHERE p.author_id = $5 AND p.post_id < $2 AND p.post_id > $3 AND {visible_sql(V)}
 ORDER BY p.post_id DESC LIMIT $4)
UNION ALL
(SELECT r.repost_id, p.post_id, r.repost_id, r.reposter_id
 FROM reposts r JOIN posts p ON p.post_id = r.post_id
 WHERE r.reposter_id = $5 AND r.repost_id < $2 AND r.repost_id > $3 AND {visible_sql(V)}
 ORDER BY r.repost_id DESC LIMIT $4)
ORDER BY key DESC LIMIT $4
"""
_USER_POSTS: Final = page_json(_USER_INNER)

# The same page behind the profile's own check, in one round trip: no row when the user is
# unknown; one row with `blocked` and NULL post columns when a block stands between them and
# the viewer, or when the page is empty; else the page, each row with blocked = false.
_PROFILE_POSTS: Final = f"""
SELECT t.blocked, page.* FROM (
    SELECT {blocked_sql(V, "u.user_id")} AS blocked FROM users u WHERE u.user_id = $5
) t
LEFT JOIN LATERAL ({_USER_POSTS}) page ON NOT t.blocked
ORDER BY page.key DESC
"""

# Public posts only (not unlisted), no reposts: a backwards scan of the partial index posts_public.
_PUBLIC: Final = page_json(f"""
SELECT p.post_id AS key, p.post_id, NULL::bigint AS repost_id, NULL::bigint AS reposter_id
FROM posts p
WHERE p.visibility = 'public' AND p.post_id < $2 AND p.post_id > $3 AND {feed_sql(V)}
ORDER BY p.post_id DESC LIMIT $4
""")

_TAG: Final = page_json(f"""
SELECT p.post_id AS key, p.post_id, NULL::bigint AS repost_id, NULL::bigint AS reposter_id
FROM post_tags t JOIN posts p ON p.post_id = t.post_id
WHERE t.tag = $5 AND t.post_id < $2 AND t.post_id > $3
  AND p.visibility = 'public' AND {feed_sql(V)}
ORDER BY t.post_id DESC LIMIT $4
""")

# Full text over posts.search (GIN index posts_search), newest first; anonymous readers get
# public posts only, signed-in ones what shows in their feeds.
_SEARCH_POSTS: Final = _hydrate(f"""
SELECT p.post_id AS key, p.post_id, NULL::bigint AS repost_id, NULL::bigint AS reposter_id
FROM posts p
WHERE p.search @@ websearch_to_tsquery('simple', $5)
  AND p.post_id < $2 AND p.post_id > $3
  AND ({V} IS NOT NULL OR p.visibility = 'public') AND {feed_sql(V)}
ORDER BY p.post_id DESC LIMIT $4
""")

# Rows by id for thread and notification reads, decided in Python by can_view.
_POSTS_BY_IDS: Final = _hydrate("""
SELECT p.post_id AS key, p.post_id, NULL::bigint AS repost_id, NULL::bigint AS reposter_id
FROM posts p WHERE p.post_id = ANY($1::bigint[])
""")

# A thread's ancestors: follow in_reply_to_id upwards, at most 40 steps.
_ANCESTORS: Final = """
WITH RECURSIVE up(post_id, depth) AS (
    SELECT p.in_reply_to_id, 1 FROM posts p WHERE p.post_id = $1 AND p.in_reply_to_id IS NOT NULL
  UNION ALL
    SELECT p.in_reply_to_id, up.depth + 1 FROM up JOIN posts p ON p.post_id = up.post_id
    WHERE p.in_reply_to_id IS NOT NULL AND up.depth < $2
)
SELECT post_id FROM up
"""
# Descendants depth-first by time: the path of ids (snowflakes, so time-ordered) sorts a child
# right after its parent and siblings oldest first. Depth and row count are capped so a huge or
# deep thread costs bounded work.
_DESCENDANTS: Final = """
WITH RECURSIVE down(post_id, path) AS (
    SELECT p.post_id, ARRAY[p.post_id] FROM posts p WHERE p.in_reply_to_id = $1
  UNION ALL
    SELECT p.post_id, down.path || p.post_id
    FROM down JOIN posts p ON p.in_reply_to_id = down.post_id
    WHERE cardinality(down.path) < $3
)
SELECT post_id FROM down ORDER BY path LIMIT $2
"""

_HISTORY: Final = """
SELECT version, text, media::text AS media, created_at FROM post_versions
WHERE post_id = $1 ORDER BY version
"""


def _relations_columns(users: str, audiences: str) -> str:
    """The viewer's ($1) relations to the `users` and `audiences` arrays (SQL expressions), as
    the columns blocked, following, audiences, muted, muted_until: what can_view and
    shows_in_feed need. An anonymous (NULL) viewer matches no row, so every array is empty."""
    return f"""
  ARRAY(SELECT CASE WHEN b.blocker_id = $1 THEN b.blocked_id ELSE b.blocker_id END FROM blocks b
        WHERE b.active AND ((b.blocker_id = $1 AND b.blocked_id = ANY({users}))
                         OR (b.blocked_id = $1 AND b.blocker_id = ANY({users})))) AS blocked,
  ARRAY(SELECT f.followee_id FROM follows f
        WHERE f.follower_id = $1 AND f.active AND f.followee_id = ANY({users})) AS following,
  ARRAY(SELECT am.audience_id FROM audience_members am
        WHERE am.member_id = $1 AND am.audience_id = ANY({audiences})) AS audiences,
  ARRAY(SELECT m.muted_id FROM mutes m
        WHERE m.muter_id = $1 AND m.active AND m.muted_id = ANY({users})
        ORDER BY m.muted_id) AS muted,
  ARRAY(SELECT m.expires_at FROM mutes m
        WHERE m.muter_id = $1 AND m.active AND m.muted_id = ANY({users})
        ORDER BY m.muted_id) AS muted_until
"""


_RELATIONS: Final = "SELECT" + _relations_columns("$2::bigint[]", "$3::bigint[]")

# One post with the viewer's relations to its author and audience, for can_view in one round
# trip. `= $2` rather than `= ANY(array)`: PostgreSQL keeps a generic plan for it, where the
# array form was re-planned on every call (≈0.5 ms of planning for 0.06 ms of execution).
_ONE_POST: Final = _hydrate("""
SELECT p.post_id AS key, p.post_id, NULL::bigint AS repost_id, NULL::bigint AS reposter_id
FROM posts p WHERE p.post_id = $2
""")
_POST_FOR_VIEWER: Final = (
    f"SELECT post.*, {_relations_columns('ARRAY[post.author_id]', 'ARRAY[post.audience_id]')}"
    f" FROM ({_ONE_POST}) post"
)


# Pages for the HTTP lists: rows (key, item), the item as JSON text (page_sql.page_json).


async def home_timeline(
    db: Db, viewer: int, page: Page, pulls: bool = True
) -> list[asyncpg.Record]:
    """`pulls`: some author's posts may be pulled (pull_state.PullAuthors.any)."""
    sql = _HOME if pulls else _HOME_PUSHED
    return await db.fetch(sql, viewer, page.max_id, page.since_id, page.limit)


async def home_pages(
    db: Db, reads: Sequence[tuple[int, Page]], pulls: bool = True
) -> list[list[asyncpg.Record]]:
    """`home_timeline` for up to HOME_BATCH (viewer, page) pairs in one statement, in order."""
    args: list[object] = []
    for viewer, page in reads:
        args += (viewer, page.max_id, page.since_id, page.limit)
    args += [None] * (4 * HOME_BATCH - len(args))
    pages: list[list[asyncpg.Record]] = [[] for _ in reads]
    for row in await db.fetch(_HOME_BATCH if pulls else _HOME_BATCH_PUSHED, *args):
        pages[row["slot"]].append(row)
    return pages


async def home_after(db: Db, viewer: int, key: int, limit: int) -> list[asyncpg.Record]:
    """Home items with keys above `key`, oldest first (the stream's catch-up)."""
    return await db.fetch(_HOME_AFTER, viewer, (1 << 63) - 1, key, limit)


async def user_posts(db: Db, viewer: int | None, user_id: int, page: Page) -> list[asyncpg.Record]:
    return await db.fetch(_USER_POSTS, viewer, page.max_id, page.since_id, page.limit, user_id)


async def profile_posts(
    db: Db, viewer: int | None, user_id: int, page: Page
) -> list[asyncpg.Record] | None:
    """`user_posts`, or None when the user is unknown or a block stands between them and the
    viewer (the profile's 404)."""
    rows = await db.fetch(_PROFILE_POSTS, viewer, page.max_id, page.since_id, page.limit, user_id)
    if not rows or rows[0]["blocked"]:
        return None
    return [r for r in rows if r["key"] is not None]


async def public_timeline(db: Db, viewer: int | None, page: Page) -> list[asyncpg.Record]:
    return await db.fetch(_PUBLIC, viewer, page.max_id, page.since_id, page.limit)


async def tag_timeline(db: Db, viewer: int | None, tag: str, page: Page) -> list[asyncpg.Record]:
    return await db.fetch(_TAG, viewer, page.max_id, page.since_id, page.limit, tag)


async def search_posts(db: Db, viewer: int | None, q: str, page: Page) -> list[asyncpg.Record]:
    return await db.fetch(_SEARCH_POSTS, viewer, page.max_id, page.since_id, page.limit, q)


async def posts_by_ids(db: Db, post_ids: Iterable[int]) -> dict[int, asyncpg.Record]:
    rows = await db.fetch(_POSTS_BY_IDS, list(post_ids))
    return {r["post_id"]: r for r in rows}


async def ancestors(db: Db, post_id: int, limit: int) -> list[int]:
    """Ids of the post's ancestors, nearest first."""
    return [r["post_id"] for r in await db.fetch(_ANCESTORS, post_id, limit)]


async def descendants(db: Db, post_id: int, limit: int, max_depth: int) -> list[int]:
    return [r["post_id"] for r in await db.fetch(_DESCENDANTS, post_id, limit, max_depth)]


async def history(db: Db, post_id: int) -> list[asyncpg.Record]:
    return await db.fetch(_HISTORY, post_id)


async def post_for_viewer(
    db: Db, viewer: int | None, post_id: int
) -> tuple[asyncpg.Record, Relations] | None:
    """The hydrated post and the viewer's relations to its author and audience; None if no
    such post."""
    row = await db.fetchrow(_POST_FOR_VIEWER, viewer, post_id)
    return None if row is None else (row, _relations(row))


async def relations(
    db: Db, viewer: int | None, users: Iterable[int], audiences: Iterable[int] = ()
) -> Relations:
    """The viewer's relations restricted to `users` and `audiences` (enough for the policy)."""
    if viewer is None:
        return Relations()
    row = await db.fetchrow(_RELATIONS, viewer, list(set(users)), list(set(audiences)))
    assert row is not None
    return _relations(row)


def _relations(row: asyncpg.Record) -> Relations:
    return Relations(
        blocked=frozenset(row["blocked"]),
        following=frozenset(row["following"]),
        audiences=frozenset(row["audiences"]),
        muted=dict(zip(row["muted"], row["muted_until"], strict=True)),
    )


async def ping(db: Db) -> None:
    await db.fetchval("SELECT 1")
