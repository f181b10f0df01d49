"""SQL of the post side of the projection: profiles, posts (their fan-out: sql_fanout.py), edits,
deletes, reposts, likes and notifications. Module constants, so asyncpg's statement cache
prepares each once per connection; store.py decides which run when.

Statements that change home timelines or notifications end in `TOUCHED`, which reports how
many rows changed and, when few enough, which users: the runner wakes streaming clients with it.
"""

from __future__ import annotations

from services.projector.sql_timeline import REPOST_INSERT, TOUCHED

# A run of registrations in one statement ($1 ids, $2 usernames, $3 display names, $4 times);
# a registration never overwrites.
UPSERT_USER = """
INSERT INTO users (user_id, username, display_name, created_at)
SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::timestamptz[])
ON CONFLICT (user_id) DO NOTHING
"""

UPDATE_PROFILE = """
UPDATE users SET display_name = COALESCE($2, display_name),
                 bio = COALESCE($3, bio),
                 avatar_url = COALESCE($4, avatar_url),
                 locked = COALESCE($5, locked)
 WHERE user_id = $1
"""

# A run of new posts goes in two statements: INSERT_POSTS stores them and answers which are
# new, FAN_OUT writes those posts' timeline rows. ON CONFLICT DO NOTHING on the post's key is
# the run's idempotency gate: a redelivered (or duplicated) post is not returned, so it fans out
# nothing; a tombstoned post is never resurrected. A post counts the replies, reposts and likes
# that were projected before it (other partitions may run ahead): a few index probes per post,
# noise beside its fan-out.
#
# $16 names the posts delivered by pull (usually none): their followers' rows are not written.
#
# `id_taken` flags a new post whose id is already a repost's id. Ids come from one generator
# and never collide; the flag only keeps a log that breaks that from failing the batch (see
# FAN_OUT_GUARDED).
_INSERT_POSTS = """
WITH i AS ({source}
)
INSERT INTO posts (post_id, author_id, text, created_at, visibility, audience_id,
                   in_reply_to_id, in_reply_to_author_id, quote_of_id, conversation_id,
                   mentions, mention_names, hashtags, links, media,
                   replies_count, reposts_count, likes_count, pulled)
SELECT i.post_id, i.author_id, i.text, i.created_at, i.visibility, i.audience_id,
       i.in_reply_to_id, i.in_reply_to_author_id, i.quote_of_id,
       COALESCE(i.conversation_id,
                (SELECT p.conversation_id FROM posts p WHERE p.post_id = i.in_reply_to_id),
                (SELECT t.conversation_id FROM post_tombstones t
                  WHERE t.post_id = i.in_reply_to_id),
                i.in_reply_to_id, i.post_id),
       i.mentions::bigint[], i.mention_names::text[], i.hashtags::text[], i.links::text[],
       i.media::jsonb,
       (SELECT count(*) FROM posts r WHERE r.in_reply_to_id = i.post_id),
       (SELECT count(*) FROM reposts r WHERE r.post_id = i.post_id),
       (SELECT count(*) FROM likes l WHERE l.post_id = i.post_id),
       i.post_id = ANY({pulled}::bigint[])
  FROM i
 WHERE NOT EXISTS (SELECT 1 FROM post_tombstones t WHERE t.post_id = i.post_id)
ON CONFLICT (post_id) DO NOTHING
RETURNING post_id,
          EXISTS (SELECT 1 FROM reposts r WHERE r.repost_id = posts.post_id) AS id_taken
"""
INSERT_POSTS = _INSERT_POSTS.replace(
    "{source}",
    """
    SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::timestamptz[], $5::text[],
                         $6::bigint[], $7::bigint[], $8::bigint[], $9::bigint[], $10::bigint[],
                         $11::text[], $12::text[], $13::text[], $14::text[], $15::text[])
        AS i(post_id, author_id, text, created_at, visibility, audience_id, in_reply_to_id,
             in_reply_to_author_id, quote_of_id, conversation_id, mentions, mention_names,
             hashtags, links, media)""",
).replace("{pulled}", "$16")
# The same for posts with nothing but text (no audience, reply, quote, mention, tag, link or
# media, as every benchmark post), from five arrays and the pulled ones ($6): asyncpg encodes
# parameters element by element, and 5,000 posts took 58 ms of the projector's CPU through
# INSERT_POSTS against 25 ms through this (a statement harness, 4 rounds each).
INSERT_PLAIN_POSTS = _INSERT_POSTS.replace(
    "{source}",
    """
    SELECT p.post_id, p.author_id, p.text, p.created_at, p.visibility,
           NULL::bigint AS audience_id, NULL::bigint AS in_reply_to_id,
           NULL::bigint AS in_reply_to_author_id, NULL::bigint AS quote_of_id,
           p.post_id AS conversation_id, '{}'::text AS mentions, '{}'::text AS mention_names,
           '{}'::text AS hashtags, '{}'::text AS links, '[]'::text AS media
      FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::timestamptz[], $5::text[])
        AS p(post_id, author_id, text, created_at, visibility)""",
).replace("{pulled}", "$6")

# Authors of newly stored pulled posts ($1) become pull authors, and each active follow of a
# new pull author a row of `pulled_follows` (follows of an author who is one already got theirs
# when they were activated: MERGE_RECENT).
REGISTER_PULL = """
WITH a AS (
    INSERT INTO pull_authors (author_id)
    SELECT DISTINCT unnest($1::bigint[])
    ON CONFLICT DO NOTHING
    RETURNING author_id
)
INSERT INTO pulled_follows (follower_id, author_id)
SELECT f.follower_id, f.followee_id
  FROM a JOIN follows f ON f.followee_id = a.author_id AND f.active
 ORDER BY f.follower_id, f.followee_id
ON CONFLICT DO NOTHING
"""

# After a run is in: parents recount their replies, posts that assumed a new post was their
# conversation root move to its root, public posts enter the hashtag index. (Version 0 is
# written by a post's first edit, from the row it replaces: most posts are never edited, and
# the query side serves an unedited post as its own version 0.)
# Separate statements: one post can be both a parent and re-rooted, and PostgreSQL applies
# only one of two updates of the same row within a statement.
RECOUNT_REPLIES = """
UPDATE posts p
   SET replies_count = (SELECT count(*) FROM posts c WHERE c.in_reply_to_id = p.post_id)
 WHERE p.post_id = ANY($1::bigint[])
"""

REROOT = """
WITH n AS (
    SELECT post_id, conversation_id FROM posts
     WHERE post_id = ANY($1::bigint[]) AND conversation_id <> post_id
), tombs AS (
    UPDATE post_tombstones t SET conversation_id = n.conversation_id
      FROM n WHERE t.conversation_id = n.post_id
)
UPDATE posts c SET conversation_id = n.conversation_id
  FROM n
 WHERE c.conversation_id = n.post_id AND c.post_id <> n.post_id
"""

# Also answers whether reposts of these posts were projected before them (another partition
# ran ahead): rare, so their fan-out runs only then.
POSTS_AFTER = """
WITH tags AS (
    INSERT INTO post_tags (tag, post_id)
    SELECT t.tag, p.post_id
      FROM posts p CROSS JOIN LATERAL unnest(p.hashtags) AS t(tag)
     WHERE p.post_id = ANY($1::bigint[]) AND p.visibility = 'public'
    ON CONFLICT DO NOTHING
)
SELECT EXISTS (SELECT 1 FROM reposts WHERE post_id = ANY($1::bigint[]))
"""

# A repost shows in the timelines of the reposter and their active followers, only for public
# or unlisted originals, and a post shows once per timeline: skip timelines holding the
# original; among several reposts of one post the earliest (smallest id) stays, whatever order
# they were projected in.
_REPOST_FANOUT = (
    """
WITH r AS (
    SELECT r.repost_id, r.post_id, r.reposter_id
      FROM reposts r JOIN posts p ON p.post_id = r.post_id
     WHERE {selector} AND p.visibility IN ('public', 'unlisted')
), cand AS (
    SELECT DISTINCT ON (u.user_id, r.post_id) u.user_id, r.repost_id, r.reposter_id, r.post_id
      FROM r CROSS JOIN LATERAL (
          SELECT f.follower_id AS user_id FROM follows f
           WHERE f.followee_id = r.reposter_id AND f.active
          UNION ALL SELECT r.reposter_id) u
     ORDER BY u.user_id, r.post_id, r.repost_id
"""
    + REPOST_INSERT
)
REPOST_FANOUT_BY_ID = _REPOST_FANOUT.format(selector="r.repost_id = ANY($1::bigint[])")
# Reposts projected before their original (another partition ran ahead) fan out with it.
REPOST_FANOUT_BY_ORIGINAL = _REPOST_FANOUT.format(selector="r.post_id = ANY($1::bigint[])")

ADD_REPOST = """
WITH ins AS (
    INSERT INTO reposts (repost_id, post_id, reposter_id, created_at)
    SELECT $1, $2, $3, $4
     WHERE NOT EXISTS (SELECT 1 FROM post_tombstones WHERE post_id = $2)
    ON CONFLICT DO NOTHING
    RETURNING post_id
)
UPDATE posts p SET reposts_count = p.reposts_count + 1 FROM ins WHERE p.post_id = ins.post_id
"""

REMOVE_REPOST = """
WITH gone AS (DELETE FROM reposts WHERE repost_id = $1 RETURNING post_id
), cnt AS (
    UPDATE posts p SET reposts_count = greatest(p.reposts_count - 1, 0)
      FROM gone WHERE p.post_id = gone.post_id
), notes AS (
    DELETE FROM notifications
     WHERE post_id = $2 AND kind = 'repost' AND actor_id = $3
    RETURNING user_id
), tl AS (
    DELETE FROM home_timeline WHERE reposted_post_id = $2 AND post_id = $1
    RETURNING user_id, reposted_post_id AS original
)
SELECT user_id, original FROM tl
UNION ALL
SELECT user_id, NULL FROM notes
"""

ADD_LIKE = """
WITH ins AS (
    INSERT INTO likes (post_id, user_id, created_at)
    SELECT $1, $2, $3 WHERE NOT EXISTS (SELECT 1 FROM post_tombstones WHERE post_id = $1)
    ON CONFLICT DO NOTHING
    RETURNING post_id
)
UPDATE posts p SET likes_count = p.likes_count + 1 FROM ins WHERE p.post_id = ins.post_id
"""

REMOVE_LIKE = (
    """
WITH gone AS (DELETE FROM likes WHERE post_id = $1 AND user_id = $2 RETURNING post_id
), cnt AS (
    UPDATE posts p SET likes_count = greatest(p.likes_count - 1, 0)
      FROM gone WHERE p.post_id = gone.post_id
), w AS (
    DELETE FROM notifications WHERE post_id = $1 AND kind = 'like' AND actor_id = $2
    RETURNING user_id
)"""
    + TOUCHED
)

# Checked when created (the query service checks again when read): never to oneself, never
# between a blocked pair (nor when a later block was already projected: it would have deleted
# the notification), never from an account muted when it happened, never for a follow request
# that is no longer pending, never about a direct post that does not mention the recipient.
# Followers-only and audience posts depend on follows and memberships that other partitions
# change, so whether the recipient may view them is left to the read-time check: deciding it
# here would depend on the order partitions are projected in. Likes and reposts notify the
# post's author, who may always view it, so they need not wait for the post to be projected.
NOTIFY = (
    """
WITH n AS (
    SELECT * FROM unnest($1::bigint[], $2::uuid[], $3::text[], $4::bigint[], $5::bigint[],
                         $6::timestamptz[])
        AS n(user_id, event_id, kind, actor_id, post_id, created_at)
), w AS (
    INSERT INTO notifications (user_id, event_id, kind, actor_id, post_id, created_at)
    SELECT n.user_id, n.event_id, n.kind, n.actor_id, n.post_id, n.created_at
      FROM n LEFT JOIN posts p ON p.post_id = n.post_id
     WHERE n.user_id <> n.actor_id
       AND NOT EXISTS (
           SELECT 1 FROM blocks b
            WHERE ((b.blocker_id = n.user_id AND b.blocked_id = n.actor_id)
                OR (b.blocker_id = n.actor_id AND b.blocked_id = n.user_id))
              -- As of the event, not as of arrival (invariant 4): a block stood at the
              -- event if one came before it and no unblock between; a later block removes
              -- older notifications, so it counts too. An unblock alone blocks nothing.
              -- A block standing since before the event may have been lifted before it by
              -- an unblock not projected yet: the notification is kept (reads hide it while
              -- the block stands) and that unblock removes it if it came after the event
              -- (UNBLOCK_NOTIFICATIONS).
              AND (b.last_block_version > n.event_id
                   OR (b.version > n.event_id
                       AND b.last_block_version
                           <> '00000000-0000-0000-0000-000000000000'::uuid)))
       AND NOT EXISTS (
           SELECT 1 FROM mutes m
            WHERE m.muter_id = n.user_id AND m.muted_id = n.actor_id
              -- A mute standing since before the event may have been lifted before it by an
              -- unmute not projected yet: kept (reads hide it), and UPSERT_MUTE removes it
              -- when that unmute comes after the event.
              AND m.last_mute_version < n.event_id AND m.version > n.event_id
              AND m.last_mute_version <> '00000000-0000-0000-0000-000000000000'::uuid
              AND (m.expires_at IS NULL OR m.expires_at > n.created_at))
       AND (n.kind <> 'follow_request' OR EXISTS (
           SELECT 1 FROM follow_requests r
            WHERE r.follower_id = n.actor_id AND r.followee_id = n.user_id
              AND r.version = n.event_id))
       AND (n.post_id IS NULL
            OR (p.post_id IS NULL AND n.kind IN ('like', 'repost')
                AND NOT EXISTS (SELECT 1 FROM post_tombstones t WHERE t.post_id = n.post_id))
            OR p.author_id = n.user_id
            OR p.visibility IN ('public', 'unlisted', 'followers', 'audience')
            OR n.user_id = ANY(p.mentions))
     ORDER BY n.user_id, n.event_id
    ON CONFLICT DO NOTHING
    RETURNING user_id
)"""
    + TOUCHED
)

# Later edits win (edits of one post share the author's partition, so this only guards
# redelivery); each edit appends one version, once. The first edit also writes version 0 from
# the row as it was (every part of the statement reads the same snapshot: `old` and `v0` see
# the post before `up` changes it, `ver` sees no version yet and numbers the edit 1).
EDIT_POST = """
WITH old AS (SELECT hashtags, visibility, text, media, created_at FROM posts WHERE post_id = $1
), up AS (
    UPDATE posts SET text = $2, mentions = $3::bigint[], mention_names = $4::text[],
                     hashtags = $5::text[], links = $6::text[], media = $7::jsonb,
                     edited_at = $8
     WHERE post_id = $1 AND (edited_at IS NULL OR edited_at < $8)
    RETURNING post_id
), v0 AS (
    -- Kept if there is one already (a later edit, or a post from before versions were lazy).
    INSERT INTO post_versions (post_id, version, text, media, created_at)
    SELECT $1, 0, old.text, old.media, old.created_at FROM up, old
    ON CONFLICT DO NOTHING
), ver AS (
    INSERT INTO post_versions (post_id, version, text, media, created_at)
    SELECT $1, (SELECT coalesce(max(version), 0) + 1 FROM post_versions WHERE post_id = $1),
           $2, $7::jsonb, $8
      FROM up
     WHERE NOT EXISTS (SELECT 1 FROM post_versions WHERE post_id = $1 AND created_at = $8)
    ON CONFLICT DO NOTHING
), untag AS (
    DELETE FROM post_tags
     WHERE post_id = $1 AND EXISTS (SELECT 1 FROM up)
       AND EXISTS (SELECT 1 FROM old WHERE tag = ANY(old.hashtags)) AND NOT tag = ANY($5::text[])
)
INSERT INTO post_tags (tag, post_id)
SELECT t.tag, $1 FROM up, old, unnest($5::text[]) AS t(tag)
 WHERE old.visibility = 'public'
ON CONFLICT DO NOTHING
"""

# Timeline rows of a post exist only in the timelines of its readers at fan-out time: the
# author, active followers (unfollow and block remove rows), audience members, mentioned
# users. That set bounds the delete without an index on home_timeline(post_id), which would
# cost every fan-out insert. Reposts of it go through their own partial index.
DELETE_POST = (
    """
WITH gone AS (
    DELETE FROM posts WHERE post_id = $1
    RETURNING post_id, audience_id, mentions, hashtags, in_reply_to_id, conversation_id
), tomb AS (
    INSERT INTO post_tombstones (post_id, author_id, deleted_at, conversation_id)
    SELECT $1, $2, $3, (SELECT conversation_id FROM gone)
    ON CONFLICT DO NOTHING
), parent AS (
    UPDATE posts p SET replies_count = greatest(p.replies_count - 1, 0)
      FROM gone WHERE p.post_id = gone.in_reply_to_id
), readers AS (
    SELECT follower_id AS user_id FROM follows WHERE followee_id = $2 AND active
    UNION SELECT $2
    UNION SELECT m.member_id FROM gone g JOIN audience_members m ON m.audience_id = g.audience_id
    UNION SELECT unnest(g.mentions) FROM gone g
), own AS (
    DELETE FROM home_timeline h USING readers r
     WHERE h.user_id = r.user_id AND h.post_id = $1
    RETURNING h.user_id
), reposted AS (
    DELETE FROM home_timeline WHERE reposted_post_id = $1 RETURNING user_id
), notes AS (
    DELETE FROM notifications WHERE post_id = $1 RETURNING user_id
), tags AS (
    DELETE FROM post_tags t USING gone WHERE t.tag = ANY(gone.hashtags) AND t.post_id = $1
), versions AS (
    DELETE FROM post_versions WHERE post_id = $1
), reposts AS (
    DELETE FROM reposts WHERE post_id = $1
), likes AS (
    DELETE FROM likes WHERE post_id = $1
), w AS (
    SELECT user_id FROM own UNION ALL SELECT user_id FROM reposted
    UNION ALL SELECT user_id FROM notes
)"""
    + TOUCHED
)
