"""Read-model queries. Every statement is parameterised and constant, so asyncpg prepares it
once per connection and reuses the plan.

Reads fetch facts; the visibility decision is policy.can_view (single rows) or its SQL twin
policy.visible_sql (pages), never ad-hoc conditions here.
"""

from __future__ import annotations

from typing import Final, TypeAlias

import asyncpg

from services.query.pagination import Page
from services.query.policy import Relations, visible_sql

Db: TypeAlias = asyncpg.Pool | asyncpg.Connection

# The timeline read DESIGN.md §4 measures: one range scan of the home_timeline primary key
# (user_id, post_id) walked backwards, primary-key joins to posts and users, and the block check
# at read time because a block may be newer than the rows the projector has not removed yet.
_HOME_TIMELINE: Final = f"""
SELECT p.post_id, p.author_id, u.username, u.display_name, p.text, p.created_at
FROM home_timeline h
JOIN posts p ON p.post_id = h.post_id
JOIN users u ON u.user_id = p.author_id
WHERE h.user_id = $1 AND h.post_id < $2 AND h.post_id > $3
  AND {visible_sql("$1::bigint", "h.author_id")}
ORDER BY h.post_id DESC
LIMIT $4
"""

# One author's posts: a backwards range scan of posts_author (author_id, post_id).
_AUTHOR_POSTS: Final = f"""
SELECT p.post_id, p.author_id, p.text, p.created_at
FROM posts p
WHERE p.author_id = $1 AND p.post_id < $2 AND p.post_id > $3
  AND {visible_sql("$4::bigint", "p.author_id")}
ORDER BY p.post_id DESC
LIMIT $5
"""

# Facts only: whether a block stands between the viewer and the row's author. The decision is
# can_view's. With an anonymous viewer both probes compare to NULL and find nothing.
_BLOCKED_EITHER_WAY: Final = """
EXISTS (SELECT 1 FROM blocks b
        WHERE b.active AND ((b.blocker_id = $2 AND b.blocked_id = {author})
                         OR (b.blocker_id = {author} AND b.blocked_id = $2)))
"""

_POST: Final = f"""
SELECT p.post_id, p.author_id, u.username, u.display_name, p.text, p.created_at,
       {_BLOCKED_EITHER_WAY.format(author="p.author_id")} AS blocked
FROM posts p
JOIN users u ON u.user_id = p.author_id
WHERE p.post_id = $1
"""

_AUTHOR: Final = f"""
SELECT u.user_id, u.username, u.display_name,
       {_BLOCKED_EITHER_WAY.format(author="u.user_id")} AS blocked
FROM users u
WHERE u.user_id = $1
"""

# Counts come from the read model itself: followers through the partial index
# follows_followee_active, following through the follows primary key, posts through
# posts_author. All are index range scans, linear in the count; a counter table kept by the
# projector would make them O(1) for very large accounts.
_PROFILE_COLUMNS: Final = """
SELECT u.user_id, u.username, u.display_name, u.created_at,
       (SELECT count(*) FROM follows f WHERE f.followee_id = u.user_id AND f.active)
           AS followers_count,
       (SELECT count(*) FROM follows f WHERE f.follower_id = u.user_id AND f.active)
           AS following_count,
       (SELECT count(*) FROM posts p WHERE p.author_id = u.user_id) AS posts_count
FROM users u
"""
_PROFILE_BY_ID: Final = _PROFILE_COLUMNS + "WHERE u.user_id = $1"
# lower(username) is what the index users_username is built on. The command side keeps
# usernames unique regardless of case, but the read model does not enforce it (a projection
# never rejects a fact), so the oldest account answers if two ever share a name.
_PROFILE_BY_USERNAME: Final = (
    _PROFILE_COLUMNS + "WHERE lower(u.username) = lower($1) ORDER BY u.user_id LIMIT 1"
)


async def home_timeline(db: Db, viewer_id: int, page: Page) -> list[asyncpg.Record]:
    return await db.fetch(_HOME_TIMELINE, viewer_id, page.max_id, page.since_id, page.limit)


async def author_posts(
    db: Db, author_id: int, viewer_id: int | None, page: Page
) -> list[asyncpg.Record]:
    return await db.fetch(
        _AUTHOR_POSTS, author_id, page.max_id, page.since_id, viewer_id, page.limit
    )


async def post(db: Db, post_id: int, viewer_id: int | None) -> asyncpg.Record | None:
    """The post with its author and a `blocked` fact for the viewer; None if there is none."""
    return await db.fetchrow(_POST, post_id, viewer_id)


async def author(db: Db, user_id: int, viewer_id: int | None) -> asyncpg.Record | None:
    """The user with a `blocked` fact for the viewer; None if unknown."""
    return await db.fetchrow(_AUTHOR, user_id, viewer_id)


async def profile_by_id(db: Db, user_id: int) -> asyncpg.Record | None:
    return await db.fetchrow(_PROFILE_BY_ID, user_id)


async def profile_by_username(db: Db, username: str) -> asyncpg.Record | None:
    return await db.fetchrow(_PROFILE_BY_USERNAME, username)


def relations_from_row(row: asyncpg.Record, author_id: int) -> Relations:
    """Relations from a row that carries the `blocked` fact for its author."""
    return Relations(blocked=frozenset((author_id,)) if row["blocked"] else frozenset())


async def ping(db: Db) -> None:
    await db.fetchval("SELECT 1")
