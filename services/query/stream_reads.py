"""Read-model queries of notifications and of the home stream's catch-up (deletes, start
positions); the conventions of repository.py hold here too."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Final

import asyncpg

from services.query.policy import blocked_sql, muted_sql, visible_sql
from services.query.repository import Db, V

# Notifications: blocks and mutes of the actor and the post's visibility are checked again at
# read time, and so is a mute that stands since before the notification's event and had not
# expired when it happened (the projector keeps such a notification, not knowing yet whether
# an unmute came between: UPSERT_MUTE removes it if not); one whose post is gone or hidden is
# skipped, and so is one whose cause was undone (an unfollow, a withdrawn or decided request,
# an unlike, an un-repost) or repeated (a request asked again shows once, as the latest), as
# Mastodon does.
# Each check is one primary-key or unique-index probe.
_NOTIFICATIONS_INNER: Final = f"""
SELECT n.event_id, n.kind, n.created_at, n.post_id,
       a.user_id, a.username, a.display_name, a.avatar_url
FROM notifications n
JOIN users a ON a.user_id = n.actor_id
LEFT JOIN posts p ON p.post_id = n.post_id
WHERE n.user_id = {V} AND n.event_id < $2 AND n.event_id > $3
  AND NOT {blocked_sql(V, "n.actor_id")} AND NOT {muted_sql(V, "n.actor_id")}
  AND NOT EXISTS (SELECT 1 FROM mutes m
                   WHERE m.muter_id = {V} AND m.muted_id = n.actor_id AND m.active
                     AND m.last_mute_version < n.event_id
                     AND (m.expires_at IS NULL OR m.expires_at > n.created_at))
  AND (n.post_id IS NULL OR (p.post_id IS NOT NULL AND {visible_sql(V)}))
  AND CASE n.kind
      WHEN 'follow' THEN EXISTS (SELECT 1 FROM follows f
          WHERE f.follower_id = n.actor_id AND f.followee_id = n.user_id AND f.active)
      WHEN 'follow_request' THEN EXISTS (SELECT 1 FROM follow_requests r
          WHERE r.follower_id = n.actor_id AND r.followee_id = n.user_id
            AND r.version = n.event_id)
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

UUID_MAX: Final = uuid.UUID(int=(1 << 128) - 1)


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
