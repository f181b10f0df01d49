"""Read-model queries about accounts: profiles, follower and following lists, follow requests,
account search, relationships and audiences. The conventions of repository.py hold here too:
constant parameterised statements (prepared once per connection), the viewer first (`V`),
blocks decided by the policy's SQL twins."""

from __future__ import annotations

from typing import Final

import asyncpg

from services.query.pagination import Page
from services.query.policy import blocked_sql
from services.query.repository import Db, V

_USER: Final = f"""
SELECT u.user_id, u.username, u.display_name, u.avatar_url, {blocked_sql(V, "u.user_id")} AS blocked
FROM users u WHERE u.user_id = $2
"""

# Counts come from the read model itself: followers through the partial index
# follows_followee_active, following through the follows primary key, posts through
# posts_author. All are index range scans, linear in the count; a counter table kept by the
# projector would make them O(1) for very large accounts.
_PROFILE_COLUMNS: Final = f"""
SELECT u.user_id, u.username, u.display_name, u.created_at, u.bio, u.avatar_url, u.locked,
       {blocked_sql(V, "u.user_id")} AS blocked,
       (SELECT count(*) FROM follows f WHERE f.followee_id = u.user_id AND f.active)
           AS followers_count,
       (SELECT count(*) FROM follows f WHERE f.follower_id = u.user_id AND f.active)
           AS following_count,
       (SELECT count(*) FROM posts p WHERE p.author_id = u.user_id) AS posts_count
FROM users u
"""
_PROFILE_BY_ID: Final = _PROFILE_COLUMNS + "WHERE u.user_id = $2"
# lower(username) is what the index users_username is built on. The command side keeps
# usernames unique regardless of case, but the read model does not enforce it (a projection
# never rejects a fact), so the oldest account answers if two ever share a name.
_PROFILE_BY_USERNAME: Final = (
    _PROFILE_COLUMNS + "WHERE lower(u.username) = lower($2) ORDER BY u.user_id LIMIT 1"
)

# Account lists, keyed by the other account's id, newest account first; pairs blocked either
# way with the viewer are left out.
_FOLLOWERS: Final = f"""
SELECT u.user_id AS key, u.user_id, u.username, u.display_name, u.avatar_url
FROM follows f JOIN users u ON u.user_id = f.follower_id
WHERE f.followee_id = $5 AND f.active AND f.follower_id < $2 AND f.follower_id > $3
  AND NOT {blocked_sql(V, "f.follower_id")}
ORDER BY f.follower_id DESC LIMIT $4
"""
_FOLLOWING: Final = f"""
SELECT u.user_id AS key, u.user_id, u.username, u.display_name, u.avatar_url
FROM follows f JOIN users u ON u.user_id = f.followee_id
WHERE f.follower_id = $5 AND f.active AND f.followee_id < $2 AND f.followee_id > $3
  AND NOT {blocked_sql(V, "f.followee_id")}
ORDER BY f.followee_id DESC LIMIT $4
"""
_FOLLOW_REQUESTS: Final = f"""
SELECT u.user_id AS key, u.user_id, u.username, u.display_name, u.avatar_url
FROM follow_requests r JOIN users u ON u.user_id = r.follower_id
WHERE r.followee_id = {V} AND r.follower_id < $2 AND r.follower_id > $3
  AND NOT {blocked_sql(V, "r.follower_id")}
ORDER BY r.follower_id DESC LIMIT $4
"""
# Prefix search: LIKE on lower(...) with text_pattern_ops indexes; $5 is an escaped prefix.
_SEARCH_ACCOUNTS: Final = f"""
SELECT u.user_id AS key, u.user_id, u.username, u.display_name, u.avatar_url
FROM users u
WHERE (lower(u.username) LIKE $5 OR lower(u.display_name) LIKE $5)
  AND u.user_id < $2 AND u.user_id > $3 AND NOT {blocked_sql(V, "u.user_id")}
ORDER BY u.user_id DESC LIMIT $4
"""

_RELATIONSHIPS: Final = """
SELECT t.id,
  EXISTS (SELECT 1 FROM follows f WHERE f.follower_id = $1 AND f.followee_id = t.id AND f.active)
    AS following,
  EXISTS (SELECT 1 FROM follows f WHERE f.follower_id = t.id AND f.followee_id = $1 AND f.active)
    AS followed_by,
  EXISTS (SELECT 1 FROM follow_requests r WHERE r.follower_id = $1 AND r.followee_id = t.id)
    AS requested,
  EXISTS (SELECT 1 FROM blocks b WHERE b.blocker_id = $1 AND b.blocked_id = t.id AND b.active)
    AS blocking,
  EXISTS (SELECT 1 FROM blocks b WHERE b.blocker_id = t.id AND b.blocked_id = $1 AND b.active)
    AS blocked_by,
  m.muter_id IS NOT NULL AS muting, m.expires_at AS muting_expires_at
FROM unnest($2::bigint[]) WITH ORDINALITY AS t(id, n)
LEFT JOIN mutes m ON m.muter_id = $1 AND m.muted_id = t.id AND m.active
                 AND (m.expires_at IS NULL OR m.expires_at > now())
ORDER BY t.n
"""

_AUDIENCES: Final = """
SELECT a.audience_id, a.name, a.created_at,
       (SELECT count(*) FROM audience_members m WHERE m.audience_id = a.audience_id)
           AS members_count
FROM audiences a WHERE a.owner_id = $1 AND NOT a.deleted ORDER BY a.audience_id DESC
"""
_AUDIENCE_OWNER: Final = "SELECT owner_id FROM audiences WHERE audience_id = $1 AND NOT deleted"
_AUDIENCE_MEMBERS: Final = """
SELECT u.user_id AS key, u.user_id, u.username, u.display_name, u.avatar_url
FROM audience_members m JOIN users u ON u.user_id = m.member_id
WHERE m.audience_id = $1 AND m.member_id < $2 AND m.member_id > $3
ORDER BY m.member_id DESC LIMIT $4
"""


async def search_accounts(
    db: Db, viewer: int | None, prefix: str, page: Page
) -> list[asyncpg.Record]:
    escaped = prefix.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return await db.fetch(
        _SEARCH_ACCOUNTS, viewer, page.max_id, page.since_id, page.limit, escaped + "%"
    )


async def user(db: Db, viewer: int | None, user_id: int) -> asyncpg.Record | None:
    """The user with a `blocked` fact (either way) for the viewer; None if unknown."""
    return await db.fetchrow(_USER, viewer, user_id)


async def profile_by_id(db: Db, viewer: int | None, user_id: int) -> asyncpg.Record | None:
    """The profile with a `blocked` fact (either way) for the viewer; None if unknown."""
    return await db.fetchrow(_PROFILE_BY_ID, viewer, user_id)


async def profile_by_username(db: Db, viewer: int | None, username: str) -> asyncpg.Record | None:
    return await db.fetchrow(_PROFILE_BY_USERNAME, viewer, username)


async def followers(db: Db, viewer: int | None, user_id: int, page: Page) -> list[asyncpg.Record]:
    return await db.fetch(_FOLLOWERS, viewer, page.max_id, page.since_id, page.limit, user_id)


async def following(db: Db, viewer: int | None, user_id: int, page: Page) -> list[asyncpg.Record]:
    return await db.fetch(_FOLLOWING, viewer, page.max_id, page.since_id, page.limit, user_id)


async def follow_requests(db: Db, viewer: int, page: Page) -> list[asyncpg.Record]:
    return await db.fetch(_FOLLOW_REQUESTS, viewer, page.max_id, page.since_id, page.limit)


async def relationships(db: Db, viewer: int, ids: list[int]) -> list[asyncpg.Record]:
    return await db.fetch(_RELATIONSHIPS, viewer, ids)


async def audiences(db: Db, owner: int) -> list[asyncpg.Record]:
    return await db.fetch(_AUDIENCES, owner)


async def audience_owner(db: Db, audience_id: int) -> int | None:
    owner: int | None = await db.fetchval(_AUDIENCE_OWNER, audience_id)
    return owner


async def audience_members(db: Db, audience_id: int, page: Page) -> list[asyncpg.Record]:
    return await db.fetch(_AUDIENCE_MEMBERS, audience_id, page.max_id, page.since_id, page.limit)
