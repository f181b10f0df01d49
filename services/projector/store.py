"""Applies planned operations to PostgreSQL, inside the caller's transaction.

Thin on purpose: the decisions live in project.py; here each operation is one or two
set-based statements. Statements are module constants so asyncpg's statement cache prepares each
once per connection.
"""

from __future__ import annotations

import uuid

import asyncpg

from services.projector.project import AddPosts, DeletePost, Op, SetBlock, SetFollow, UpsertUser

NIL_VERSION = uuid.UUID(int=0)

UPSERT_USER = """
INSERT INTO users (user_id, username, display_name, created_at)
VALUES ($1, $2, $3, $4)
ON CONFLICT (user_id) DO UPDATE SET username = EXCLUDED.username,
                                    display_name = EXCLUDED.display_name
"""

# One statement per run of new posts: insert them, then fan each out to the author's active
# followers and to the author. Rows are sorted by (user_id, post_id) so concurrent writers take
# index locks in the same order. ON CONFLICT DO NOTHING in the post insert means a redelivered
# post fans out nothing.
ADD_POSTS = """
WITH new AS (
    INSERT INTO posts (post_id, author_id, text, created_at)
    SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::timestamptz[])
    ON CONFLICT (post_id) DO NOTHING
    RETURNING post_id, author_id
)
INSERT INTO home_timeline (user_id, post_id, author_id)
SELECT r.user_id, r.post_id, r.author_id FROM (
    SELECT f.follower_id AS user_id, n.post_id, n.author_id
      FROM new n JOIN follows f ON f.followee_id = n.author_id AND f.active
    UNION ALL
    SELECT n.author_id, n.post_id, n.author_id FROM new n
) r
ORDER BY r.user_id, r.post_id
ON CONFLICT DO NOTHING
"""

# Timeline rows of a post exist only in the timelines of the author and the author's active
# followers (unfollow and block remove them), so that set bounds the delete without an index
# on home_timeline(post_id), which would cost every fan-out insert.
DELETE_POST = """
WITH gone AS (DELETE FROM posts WHERE post_id = $1 RETURNING post_id)
DELETE FROM home_timeline h
 WHERE h.post_id = $1
   AND h.user_id IN (SELECT follower_id FROM follows WHERE followee_id = $2 AND active
                     UNION ALL SELECT $2)
"""

UPSERT_FOLLOW = """
INSERT INTO follows AS f (follower_id, followee_id, active, version, since)
VALUES ($1, $2,
        $3 AND NOT EXISTS (
            SELECT 1 FROM blocks b
             WHERE ((b.blocker_id = $1 AND b.blocked_id = $2)
                 OR (b.blocker_id = $2 AND b.blocked_id = $1))
               AND b.last_block_version > $4),
        $4, $5)
ON CONFLICT (follower_id, followee_id) DO UPDATE
   SET active = EXCLUDED.active, version = EXCLUDED.version, since = EXCLUDED.since
 WHERE f.version < EXCLUDED.version
"""

FOLLOW_ACTIVE = "SELECT active FROM follows WHERE follower_id = $1 AND followee_id = $2"

MERGE_RECENT = """
INSERT INTO home_timeline (user_id, post_id, author_id)
SELECT $1, p.post_id, p.author_id FROM (
    SELECT post_id, author_id FROM posts WHERE author_id = $2 ORDER BY post_id DESC LIMIT $3
) p
ORDER BY p.post_id
ON CONFLICT DO NOTHING
"""

REMOVE_AUTHOR = "DELETE FROM home_timeline WHERE user_id = $1 AND author_id = $2"

UPSERT_BLOCK = """
INSERT INTO blocks AS b (blocker_id, blocked_id, active, version, last_block_version, since)
VALUES ($1, $2, $3, $4::uuid, CASE WHEN $3 THEN $4::uuid ELSE $5::uuid END, $6)
ON CONFLICT (blocker_id, blocked_id) DO UPDATE
   SET active = EXCLUDED.active,
       version = EXCLUDED.version,
       since = EXCLUDED.since,
       last_block_version = GREATEST(b.last_block_version, EXCLUDED.last_block_version)
 WHERE b.version < EXCLUDED.version
"""

# A block ends every follow between the two people that is older than the block.
END_FOLLOWS = """
UPDATE follows SET active = false
 WHERE ((follower_id = $1 AND followee_id = $2) OR (follower_id = $2 AND followee_id = $1))
   AND active AND version < $3
"""

# After a block, each side's timeline loses the other's posts unless a follow newer than the
# block survives (only possible in a race the command side lost; reads filter blocks anyway).
REMOVE_UNFOLLOWED = """
DELETE FROM home_timeline h
 WHERE ((h.user_id = $1 AND h.author_id = $2) OR (h.user_id = $2 AND h.author_id = $1))
   AND NOT EXISTS (SELECT 1 FROM follows f
                    WHERE f.follower_id = h.user_id AND f.followee_id = h.author_id AND f.active)
"""


async def apply(conn: asyncpg.Connection, ops: list[Op], timeline_cap: int) -> int:
    """Apply operations in order; returns the number of timeline rows the fan-outs wrote."""
    fanned = 0
    for op in ops:
        match op:
            case AddPosts(posts=posts):
                status = await conn.execute(
                    ADD_POSTS,
                    [p.post_id for p in posts],
                    [p.author_id for p in posts],
                    [p.text for p in posts],
                    [p.created_at for p in posts],
                )
                fanned += int(status.rsplit(" ", 1)[-1])
            case UpsertUser():
                await conn.execute(
                    UPSERT_USER, op.user_id, op.username, op.display_name, op.created_at
                )
            case DeletePost():
                await conn.execute(DELETE_POST, op.post_id, op.author_id)
            case SetFollow():
                await conn.execute(
                    UPSERT_FOLLOW, op.follower_id, op.followee_id, op.active, op.version, op.at
                )
                active = await conn.fetchval(FOLLOW_ACTIVE, op.follower_id, op.followee_id)
                if active:
                    await conn.execute(MERGE_RECENT, op.follower_id, op.followee_id, timeline_cap)
                else:
                    await conn.execute(REMOVE_AUTHOR, op.follower_id, op.followee_id)
            case SetBlock():
                await conn.execute(
                    UPSERT_BLOCK,
                    op.blocker_id,
                    op.blocked_id,
                    op.active,
                    op.version,
                    NIL_VERSION,
                    op.at,
                )
                if op.active:
                    await conn.execute(END_FOLLOWS, op.blocker_id, op.blocked_id, op.version)
                    await conn.execute(REMOVE_UNFOLLOWED, op.blocker_id, op.blocked_id)
    return fanned
