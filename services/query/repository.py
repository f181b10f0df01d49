"""Read-model queries. Every statement is parameterised and constant, so asyncpg prepares it
once per connection and reuses the plan.

Reads fetch facts; the visibility decision is shared.policy (single rows, via `relations`) or
its SQL twins in services/query/policy.py (pages), never ad-hoc conditions here.

Post lists are built in two steps inside one statement: an inner query picks the page as rows
`(key, post_id, repost_id, reposter_id)` — `key` is what the page is ordered and bounded by (a
post id, or a repost's own id) — and `_hydrate` joins the post, its author, the reposter and
the audience name to it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Final, TypeAlias

import asyncpg

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

V: Final = "$1::bigint"  # the viewer (NULL: anonymous) is always the first parameter

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
FROM page
JOIN posts p ON p.post_id = page.post_id
JOIN users u ON u.user_id = p.author_id
LEFT JOIN audiences aud ON aud.audience_id = p.audience_id
LEFT JOIN users ru ON ru.user_id = page.reposter_id
ORDER BY page.key {order}
"""


# The timeline read DESIGN.md §4 measures: one range scan of the home_timeline primary key
# (user_id, post_id) walked backwards plus primary-key joins. The policy is checked again at read
# time because a block, mute or unfollow may be newer than the rows the projector has not
# removed yet. A repost row carries its own id as post_id and the shared post in
# reposted_post_id; it shows only while the repost exists and its reposter is neither blocked
# nor muted.
_HOME_INNER: Final = f"""
SELECT h.post_id AS key, p.post_id, r.repost_id, r.reposter_id
FROM home_timeline h
JOIN posts p ON p.post_id = coalesce(h.reposted_post_id, h.post_id)
LEFT JOIN reposts r ON h.reposted_post_id IS NOT NULL AND r.repost_id = h.post_id
WHERE h.user_id = {V} AND h.post_id < $2 AND h.post_id > $3
  AND {feed_sql(V)}
  AND (h.reposted_post_id IS NULL OR (r.repost_id IS NOT NULL
       AND NOT {blocked_sql(V, "r.reposter_id")}
       AND (r.reposter_id = {V} OR NOT {muted_sql(V, "r.reposter_id")})))
ORDER BY h.post_id {{order}}
LIMIT $4
"""
_HOME: Final = _hydrate(_HOME_INNER.format(order="DESC"))
# The stream reads forwards from its cursor.
_HOME_AFTER: Final = _hydrate(_HOME_INNER.format(order="ASC"), "ASC")

# A profile: the author's posts and their reposts of posts the viewer may view, merged by key.
# Each branch is a backwards range scan (posts_author, reposts_reposter) cut to the limit.
_USER_POSTS: Final = _hydrate(f"""
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
""")

# Public posts only (not unlisted), no reposts: a backwards scan of the partial index posts_public.
_PUBLIC: Final = _hydrate(f"""
SELECT p.post_id AS key, p.post_id, NULL::bigint AS repost_id, NULL::bigint AS reposter_id
FROM posts p
WHERE p.visibility = 'public' AND p.post_id < $2 AND p.post_id > $3 AND {feed_sql(V)}
ORDER BY p.post_id DESC LIMIT $4
""")

_TAG: Final = _hydrate(f"""
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

# Rows by id for single-post reads, decided in Python by can_view.
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

# The viewer's relations to the given users and audiences, for can_view / shows_in_feed.
_RELATIONS: Final = """
SELECT
  ARRAY(SELECT CASE WHEN b.blocker_id = $1 THEN b.blocked_id ELSE b.blocker_id END FROM blocks b
        WHERE b.active AND ((b.blocker_id = $1 AND b.blocked_id = ANY($2::bigint[]))
                         OR (b.blocked_id = $1 AND b.blocker_id = ANY($2::bigint[])))) AS blocked,
  ARRAY(SELECT f.followee_id FROM follows f
        WHERE f.follower_id = $1 AND f.active AND f.followee_id = ANY($2::bigint[])) AS following,
  ARRAY(SELECT am.audience_id FROM audience_members am
        WHERE am.member_id = $1 AND am.audience_id = ANY($3::bigint[])) AS audiences,
  ARRAY(SELECT m.muted_id FROM mutes m
        WHERE m.muter_id = $1 AND m.active AND m.muted_id = ANY($2::bigint[])
        ORDER BY m.muted_id) AS muted,
  ARRAY(SELECT m.expires_at FROM mutes m
        WHERE m.muter_id = $1 AND m.active AND m.muted_id = ANY($2::bigint[])
        ORDER BY m.muted_id) AS muted_until
"""

_ACCOUNT: Final = "SELECT user_id, username, display_name, avatar_url, locked FROM users"
_USER: Final = f"""
SELECT u.user_id, u.username, u.display_name, u.avatar_url, {blocked_sql(V, "u.user_id")} AS blocked
FROM users u WHERE u.user_id = $2
"""

# Counts come from the read model itself: followers through the partial index
# follows_followee_active, following through the follows primary key, posts through
# posts_author. All are index range scans, linear in the count; a counter table kept by the
# projector would make them O(1) for very large accounts.
_PROFILE_COLUMNS: Final = """
SELECT u.user_id, u.username, u.display_name, u.created_at, u.bio, u.avatar_url, u.locked,
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

# Notifications: blocks and mutes of the actor and the post's visibility are checked again at
# read time; one whose post is gone or hidden is skipped, and so is one whose cause was undone
# (an unfollow, a withdrawn or decided request, an unlike, an un-repost), as Mastodon does.
# Each check is one primary-key or unique-index probe.
_NOTIFICATIONS_INNER: Final = f"""
SELECT n.event_id, n.kind, n.created_at, n.post_id,
       a.user_id, a.username, a.display_name, a.avatar_url
FROM notifications n
JOIN users a ON a.user_id = n.actor_id
LEFT JOIN posts p ON p.post_id = n.post_id
WHERE n.user_id = {V} AND n.event_id < $2 AND n.event_id > $3
  AND NOT {blocked_sql(V, "n.actor_id")} AND NOT {muted_sql(V, "n.actor_id")}
  AND (n.post_id IS NULL OR (p.post_id IS NOT NULL AND {visible_sql(V)}))
  AND CASE n.kind
      WHEN 'follow' THEN EXISTS (SELECT 1 FROM follows f
          WHERE f.follower_id = n.actor_id AND f.followee_id = n.user_id AND f.active)
      WHEN 'follow_request' THEN EXISTS (SELECT 1 FROM follow_requests r
          WHERE r.follower_id = n.actor_id AND r.followee_id = n.user_id)
      WHEN 'like' THEN EXISTS (SELECT 1 FROM likes l
          WHERE l.post_id = n.post_id AND l.user_id = n.actor_id)
      WHEN 'repost' THEN EXISTS (SELECT 1 FROM reposts r
          WHERE r.post_id = n.post_id AND r.reposter_id = n.actor_id)
      ELSE true END
ORDER BY n.event_id {{order}} LIMIT $4
"""
_NOTIFICATIONS: Final = _NOTIFICATIONS_INNER.format(order="DESC")
_NOTIFICATIONS_AFTER: Final = _NOTIFICATIONS_INNER.format(order="ASC")

# Deletes a stream client should hear of: posts of the viewer or of accounts they follow.
_TOMBSTONES_AFTER: Final = """
SELECT t.post_id, t.deleted_at FROM post_tombstones t
WHERE (t.deleted_at, t.post_id) > ($2, $3)
  AND (t.author_id = $1 OR EXISTS (SELECT 1 FROM follows f
       WHERE f.follower_id = $1 AND f.followee_id = t.author_id AND f.active))
ORDER BY t.deleted_at, t.post_id LIMIT $4
"""
# Where a stream without Last-Event-ID starts: the newest of each source, by index scans.
_STREAM_START: Final = """
SELECT (SELECT h.post_id FROM home_timeline h WHERE h.user_id = $1
        ORDER BY h.post_id DESC LIMIT 1) AS home,
       (SELECT n.event_id FROM notifications n WHERE n.user_id = $1
        ORDER BY n.event_id DESC LIMIT 1) AS notification,
       t.deleted_at AS tombstone_at, t.post_id AS tombstone_id
FROM (SELECT 1) one
LEFT JOIN LATERAL (SELECT deleted_at, post_id FROM post_tombstones
                   ORDER BY deleted_at DESC, post_id DESC LIMIT 1) t ON true
"""

UUID_MIN: Final = uuid.UUID(int=0)
UUID_MAX: Final = uuid.UUID(int=(1 << 128) - 1)


async def home_timeline(db: Db, viewer: int, page: Page) -> list[asyncpg.Record]:
    return await db.fetch(_HOME, viewer, page.max_id, page.since_id, page.limit)


async def home_after(db: Db, viewer: int, key: int, limit: int) -> list[asyncpg.Record]:
    """Home items with keys above `key`, oldest first (the stream's catch-up)."""
    return await db.fetch(_HOME_AFTER, viewer, (1 << 63) - 1, key, limit)


async def user_posts(db: Db, viewer: int | None, user_id: int, page: Page) -> list[asyncpg.Record]:
    return await db.fetch(_USER_POSTS, viewer, page.max_id, page.since_id, page.limit, user_id)


async def public_timeline(db: Db, viewer: int | None, page: Page) -> list[asyncpg.Record]:
    return await db.fetch(_PUBLIC, viewer, page.max_id, page.since_id, page.limit)


async def tag_timeline(db: Db, viewer: int | None, tag: str, page: Page) -> list[asyncpg.Record]:
    return await db.fetch(_TAG, viewer, page.max_id, page.since_id, page.limit, tag)


async def search_posts(db: Db, viewer: int | None, q: str, page: Page) -> list[asyncpg.Record]:
    return await db.fetch(_SEARCH_POSTS, viewer, page.max_id, page.since_id, page.limit, q)


async def search_accounts(
    db: Db, viewer: int | None, prefix: str, page: Page
) -> list[asyncpg.Record]:
    escaped = prefix.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return await db.fetch(
        _SEARCH_ACCOUNTS, viewer, page.max_id, page.since_id, page.limit, escaped + "%"
    )


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


async def relations(
    db: Db, viewer: int | None, users: Iterable[int], audiences: Iterable[int] = ()
) -> Relations:
    """The viewer's relations restricted to `users` and `audiences` (enough for the policy)."""
    if viewer is None:
        return Relations()
    row = await db.fetchrow(_RELATIONS, viewer, list(set(users)), list(set(audiences)))
    assert row is not None
    return Relations(
        blocked=frozenset(row["blocked"]),
        following=frozenset(row["following"]),
        audiences=frozenset(row["audiences"]),
        muted=dict(zip(row["muted"], row["muted_until"], strict=True)),
    )


async def user(db: Db, viewer: int | None, user_id: int) -> asyncpg.Record | None:
    """The user with a `blocked` fact (either way) for the viewer; None if unknown."""
    return await db.fetchrow(_USER, viewer, user_id)


async def profile_by_id(db: Db, user_id: int) -> asyncpg.Record | None:
    return await db.fetchrow(_PROFILE_BY_ID, user_id)


async def profile_by_username(db: Db, username: str) -> asyncpg.Record | None:
    return await db.fetchrow(_PROFILE_BY_USERNAME, username)


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


async def notifications(
    db: Db, viewer: int, max_id: uuid.UUID, since_id: uuid.UUID, limit: int
) -> list[asyncpg.Record]:
    return await db.fetch(_NOTIFICATIONS, viewer, max_id, since_id, limit)


async def notifications_after(
    db: Db, viewer: int, after: uuid.UUID, limit: int
) -> list[asyncpg.Record]:
    return await db.fetch(_NOTIFICATIONS_AFTER, viewer, UUID_MAX, after, limit)


async def tombstones_after(
    db: Db, viewer: int, at: datetime, post_id: int, limit: int
) -> list[asyncpg.Record]:
    return await db.fetch(_TOMBSTONES_AFTER, viewer, at, post_id, limit)


async def stream_start(db: Db, viewer: int) -> asyncpg.Record:
    row = await db.fetchrow(_STREAM_START, viewer)
    assert row is not None
    return row


async def ping(db: Db) -> None:
    await db.fetchval("SELECT 1")
