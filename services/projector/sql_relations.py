"""SQL of the relations side of the projection: follows and follow requests, blocks,
mutes, audiences, the merges and removals they cause in home timelines, and trimming.
"""

from __future__ import annotations

from services.projector.sql_timeline import REPOST_INSERT, TOUCHED

# Follow-register writes come set-based, one row per pair (runs.latest_follows): $1
# followers, $2 followees, $3 wished states, $4 versions, $5 times. A follow older than a block
# between the two people stays inactive.
_PAIRS = "unnest($1::bigint[], $2::bigint[]) AS g(follower_id, followee_id)"

UPSERT_FOLLOWS = """
INSERT INTO follows AS f (follower_id, followee_id, active, version, since)
SELECT n.follower_id, n.followee_id,
       n.active AND NOT EXISTS (
           SELECT 1 FROM blocks b
            WHERE ((b.blocker_id = n.follower_id AND b.blocked_id = n.followee_id)
                OR (b.blocker_id = n.followee_id AND b.blocked_id = n.follower_id))
              AND b.last_block_version > n.version),
       n.version, n.since
  FROM unnest($1::bigint[], $2::bigint[], $3::bool[], $4::uuid[], $5::timestamptz[])
       AS n(follower_id, followee_id, active, version, since)
 ORDER BY n.follower_id, n.followee_id
ON CONFLICT (follower_id, followee_id) DO UPDATE
   SET active = EXCLUDED.active, version = EXCLUDED.version, since = EXCLUDED.since
 WHERE f.version < EXCLUDED.version
"""

# Any answer to a request (approval, rejection, withdrawal) ends it and its notification:
# $1 followers, $2 followees, $3 versions.
END_REQUESTS = (
    """
WITH g AS (
    SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::uuid[])
        AS g(follower_id, followee_id, version)
), req AS (
    DELETE FROM follow_requests r USING g
     WHERE r.follower_id = g.follower_id AND r.followee_id = g.followee_id
       AND r.version < g.version
), w AS (
    DELETE FROM notifications n USING g
     WHERE n.user_id = g.followee_id AND n.actor_id = g.follower_id
       AND n.kind = 'follow_request' AND n.event_id < g.version
    RETURNING n.user_id
)"""
    + TOUCHED
)

# The registers' current states (an older write arriving late did not change them).
FOLLOWS_STATE = f"""
SELECT g.follower_id, g.followee_id, coalesce(f.active, false) AS active
  FROM {_PAIRS}
  LEFT JOIN follows f ON f.follower_id = g.follower_id AND f.followee_id = g.followee_id
"""

# For every active pair, the followee's $3 most recent posts the follower may view go into the
# follower's timeline (pulled posts excepted: reads merge those, and the pair joins
# `pulled_follows` if the followee is a pull author); a merged post replaces reposts of it there.
MERGE_RECENT = (
    f"""
WITH pf AS (
    INSERT INTO pulled_follows (follower_id, author_id)
    SELECT g.follower_id, g.followee_id
      FROM {_PAIRS} JOIN pull_authors a ON a.author_id = g.followee_id
    ON CONFLICT DO NOTHING
), m AS (
    INSERT INTO home_timeline (user_id, post_id, author_id)
    SELECT g.follower_id, p.post_id, p.author_id
      FROM {_PAIRS}
      CROSS JOIN LATERAL (
        SELECT post_id, author_id FROM posts p
         WHERE author_id = g.followee_id
           AND (visibility IN ('public', 'unlisted', 'followers') AND NOT pulled
                OR (visibility = 'direct' AND g.follower_id = ANY(mentions))
                OR (visibility = 'audience' AND EXISTS (
                    SELECT 1 FROM audience_members am
                     WHERE am.audience_id = p.audience_id AND am.member_id = g.follower_id)))
         ORDER BY post_id DESC LIMIT $3
      ) p
     ORDER BY g.follower_id, p.post_id
    ON CONFLICT DO NOTHING
    RETURNING user_id, post_id
), d AS (
    DELETE FROM home_timeline h USING m
     WHERE h.user_id = m.user_id AND h.reposted_post_id = m.post_id
    RETURNING h.user_id
), w AS (SELECT user_id FROM m UNION ALL SELECT user_id FROM d)"""
    + TOUCHED
)

# For every active pair, the followee's $3 most recent reposts, under the same once-per-
# timeline rule as the repost fan-out. Within the statement the inserts cannot see each other,
# so of several followees' reposts of one original only the earliest is a candidate.
MERGE_REPOSTS = (
    f"""
WITH r AS (
    SELECT DISTINCT ON (g.follower_id, r.post_id)
           g.follower_id AS user_id, r.repost_id, r.reposter_id, r.post_id
      FROM {_PAIRS}
      CROSS JOIN LATERAL (
        SELECT r.repost_id, r.reposter_id, r.post_id
          FROM reposts r JOIN posts p ON p.post_id = r.post_id
         WHERE r.reposter_id = g.followee_id AND p.visibility IN ('public', 'unlisted')
         ORDER BY r.repost_id DESC LIMIT $3
      ) r
     ORDER BY g.follower_id, r.post_id, r.repost_id
), ins AS (
    INSERT INTO home_timeline (user_id, post_id, author_id, reposted_post_id)
    SELECT r.user_id, r.repost_id, r.reposter_id, r.post_id FROM r
     WHERE NOT EXISTS (SELECT 1 FROM home_timeline h
                        WHERE h.user_id = r.user_id AND h.post_id = r.post_id)
       AND NOT EXISTS (SELECT 1 FROM home_timeline h
                        WHERE h.user_id = r.user_id AND h.reposted_post_id = r.post_id
                          AND h.post_id < r.repost_id)
     ORDER BY r.user_id, r.repost_id
    ON CONFLICT DO NOTHING
    RETURNING user_id, post_id, reposted_post_id
), del AS (
    DELETE FROM home_timeline h USING ins
     WHERE h.user_id = ins.user_id AND h.reposted_post_id = ins.reposted_post_id
       AND h.post_id > ins.post_id
    RETURNING h.user_id
), w AS (SELECT user_id FROM ins UNION ALL SELECT user_id FROM del)"""
    + TOUCHED
)

# Rows a follow delivered: the author's public/unlisted/followers posts and their reposts.
# Audience and direct posts came by membership or mention and stay (reads apply blocks).
_FOLLOW_DELIVERED = """(h.reposted_post_id IS NOT NULL OR NOT EXISTS (
        SELECT 1 FROM posts p WHERE p.post_id = h.post_id
           AND p.visibility IN ('audience', 'direct')))"""

# REMOVE_AUTHORS returns (user, original post) of every removed row: reposts of those
# originals by accounts the user still follows may show now (RESTORE_REPOSTS).
# For every inactive pair: the follower's timeline loses the followee's follow-delivered rows,
# and the pair leaves `pulled_follows`.
REMOVE_AUTHORS = f"""
WITH pf AS (
    DELETE FROM pulled_follows pf USING {_PAIRS}
     WHERE pf.follower_id = g.follower_id AND pf.author_id = g.followee_id
)
DELETE FROM home_timeline h USING {_PAIRS}
 WHERE h.user_id = g.follower_id AND h.author_id = g.followee_id
   AND {_FOLLOW_DELIVERED}
RETURNING h.user_id, coalesce(h.reposted_post_id, h.post_id) AS original
"""

# A post shows once per timeline, so a repost was skipped while the original (or an earlier
# repost of it) was there. When those rows go, the earliest remaining repost by someone the
# user follows takes their place: the timeline ends as if the removed rows had never come,
# whatever order partitions were projected in (invariant 4).
RESTORE_REPOSTS = (
    """
WITH gone AS (
    SELECT DISTINCT * FROM unnest($1::bigint[], $2::bigint[]) AS g(user_id, post_id)
), cand AS (
    SELECT DISTINCT ON (g.user_id, r.post_id) g.user_id, r.repost_id, r.reposter_id, r.post_id
      FROM gone g
      JOIN reposts r ON r.post_id = g.post_id
      JOIN posts p ON p.post_id = r.post_id AND p.visibility IN ('public', 'unlisted')
     WHERE r.reposter_id = g.user_id
        OR EXISTS (SELECT 1 FROM follows f
                    WHERE f.follower_id = g.user_id AND f.followee_id = r.reposter_id
                      AND f.active)
     ORDER BY g.user_id, r.post_id, r.repost_id
"""
    + REPOST_INSERT
)

REQUEST_FOLLOW = """
INSERT INTO follow_requests AS r (follower_id, followee_id, version, requested_at)
SELECT $1, $2, $3, $4
 WHERE NOT EXISTS (SELECT 1 FROM follows f
                    WHERE f.follower_id = $1 AND f.followee_id = $2 AND f.version > $3)
   AND NOT EXISTS (SELECT 1 FROM blocks b
                    WHERE ((b.blocker_id = $1 AND b.blocked_id = $2)
                        OR (b.blocker_id = $2 AND b.blocked_id = $1))
                      AND b.last_block_version > $3)
ON CONFLICT (follower_id, followee_id) DO UPDATE
   SET version = EXCLUDED.version, requested_at = EXCLUDED.requested_at
 WHERE r.version < EXCLUDED.version
"""

UPSERT_BLOCK = """
INSERT INTO blocks AS b (blocker_id, blocked_id, active, version, last_block_version, since)
VALUES ($1, $2, $3, $4::uuid, CASE WHEN $3 THEN $4::uuid ELSE $5::uuid END, $6)
ON CONFLICT (blocker_id, blocked_id) DO UPDATE
   SET active = CASE WHEN b.version < EXCLUDED.version THEN EXCLUDED.active ELSE b.active END,
       version = GREATEST(b.version, EXCLUDED.version),
       since = CASE WHEN b.version < EXCLUDED.version THEN EXCLUDED.since ELSE b.since END,
       -- Also when the write is older than the register's (a block projected after its
       -- unblock): notifications need to know when the last block began.
       last_block_version = GREATEST(b.last_block_version, EXCLUDED.last_block_version)
"""

# A block ends every follow and pending request between the two people that is older than the
# block, and the notifications between them older than it. Newer ones stay: reads hide them
# while the block stands, and the unblock removes those from before it (UNBLOCK_NOTIFICATIONS),
# so every order of block, unblock and notification ends the same.
END_FOLLOWS = """
WITH f AS (
    UPDATE follows SET active = false
     WHERE ((follower_id = $1 AND followee_id = $2) OR (follower_id = $2 AND followee_id = $1))
       AND active AND version < $3
), r AS (
    DELETE FROM follow_requests
     WHERE ((follower_id = $1 AND followee_id = $2) OR (follower_id = $2 AND followee_id = $1))
       AND version < $3
)
DELETE FROM notifications
 WHERE ((user_id = $1 AND actor_id = $2) OR (user_id = $2 AND actor_id = $1))
   AND event_id < $3
"""

# After any block or unblock of the pair ($1 blocker, $2 blocked): when the register ends with
# an unblock, the notifications between the two from the block it lifted (after the last block,
# before that unblock) go; NOTIFY kept them while the block stood, not knowing yet whether an
# unblock came before them. Later ones stay. Run for blocks too: a block projected after its
# own unblock starts that period only then.
UNBLOCK_NOTIFICATIONS = (
    """
WITH w AS (
    DELETE FROM notifications n USING blocks b
     WHERE b.blocker_id = $1 AND b.blocked_id = $2 AND NOT b.active
       AND b.last_block_version <> '00000000-0000-0000-0000-000000000000'::uuid
       AND ((n.user_id = $1 AND n.actor_id = $2) OR (n.user_id = $2 AND n.actor_id = $1))
       AND n.event_id > b.last_block_version AND n.event_id < b.version
    RETURNING n.user_id
)"""
    + TOUCHED
)

# After a block, each side's timeline loses the other's follow-delivered posts (and the pair
# leaves `pulled_follows`) unless a follow newer than the block survives (only possible in a
# race the command side lost; reads filter blocks anyway).
REMOVE_UNFOLLOWED = f"""
WITH pf AS (
    DELETE FROM pulled_follows pf
     WHERE ((pf.follower_id = $1 AND pf.author_id = $2)
         OR (pf.follower_id = $2 AND pf.author_id = $1))
       AND NOT EXISTS (SELECT 1 FROM follows f
                        WHERE f.follower_id = pf.follower_id AND f.followee_id = pf.author_id
                          AND f.active)
)
DELETE FROM home_timeline h
 WHERE ((h.user_id = $1 AND h.author_id = $2) OR (h.user_id = $2 AND h.author_id = $1))
   AND {_FOLLOW_DELIVERED}
   AND NOT EXISTS (SELECT 1 FROM follows f
                    WHERE f.follower_id = h.user_id AND f.followee_id = h.author_id
                      AND f.active)
RETURNING h.user_id, coalesce(h.reposted_post_id, h.post_id) AS original
"""

# LWW register plus the start of the latest mute; then, once an unmute ended it, the
# notifications that the muted account caused while the (latest) mute stood go, in whatever
# order they were projected. While it stands, reads hide them (stream_reads): an unmute not
# projected yet may have come before some of them.
UPSERT_MUTE = (
    """
WITH m AS (
    INSERT INTO mutes AS m (muter_id, muted_id, active, expires_at, version, last_mute_version)
    VALUES ($1, $2, $3, $4, $5, CASE WHEN $3 THEN $5::uuid ELSE $6::uuid END)
    ON CONFLICT (muter_id, muted_id) DO UPDATE
       SET active = CASE WHEN m.version < EXCLUDED.version THEN EXCLUDED.active
                         ELSE m.active END,
           -- The expiry is the latest mute's, in whatever order they come: an unmute keeps
           -- the expiry of the mute it ends (notifications from that mute's period are judged
           -- against it, so an unmute projected late must not widen it), and a mute projected
           -- after a later unmute still records its own (else the period looked endless and
           -- the unmute removed what came after the mute ran out).
           expires_at = CASE WHEN EXCLUDED.active AND m.last_mute_version < EXCLUDED.version
                             THEN EXCLUDED.expires_at ELSE m.expires_at END,
           version = GREATEST(m.version, EXCLUDED.version),
           last_mute_version = GREATEST(m.last_mute_version, EXCLUDED.last_mute_version)
    RETURNING active, expires_at, version, last_mute_version
), w AS (
    DELETE FROM notifications n USING m
     WHERE n.user_id = $1 AND n.actor_id = $2
       AND n.event_id > m.last_mute_version AND n.event_id < m.version
       -- An unmute of someone never muted ends no mute and removes nothing.
       AND m.last_mute_version <> '00000000-0000-0000-0000-000000000000'::uuid
       AND (m.expires_at IS NULL OR m.expires_at > n.created_at)
    RETURNING n.user_id
)"""
    + TOUCHED
)

UPSERT_AUDIENCE = """
INSERT INTO audiences AS a (audience_id, owner_id, name, created_at) VALUES ($1, $2, $3, $4)
ON CONFLICT (audience_id) DO UPDATE SET name = EXCLUDED.name WHERE NOT a.deleted
"""

# A deleted audience's posts leave its members' timelines; the audience stays as a tombstone.
DELETE_AUDIENCE = (
    """
WITH a AS (
    INSERT INTO audiences AS a (audience_id, owner_id, name, deleted, created_at)
    VALUES ($1, $2, '', true, $3)
    ON CONFLICT (audience_id) DO UPDATE SET deleted = true
), w AS (
    DELETE FROM home_timeline h USING posts p, audience_members m
     WHERE p.audience_id = $1 AND m.audience_id = $1
       AND h.user_id = m.member_id AND h.post_id = p.post_id AND h.user_id <> p.author_id
    RETURNING h.user_id
), members AS (DELETE FROM audience_members WHERE audience_id = $1)"""
    + TOUCHED
)

ADD_MEMBER = (
    """
WITH live AS (
    SELECT 1 FROM audiences WHERE audience_id = $1 AND NOT deleted
), m AS (
    INSERT INTO audience_members (audience_id, member_id)
    SELECT $1, $2 FROM live
    ON CONFLICT DO NOTHING
), w AS (
    INSERT INTO home_timeline (user_id, post_id, author_id)
    SELECT $2, p.post_id, p.author_id FROM (
        SELECT post_id, author_id FROM posts
         WHERE audience_id = $1 AND visibility = 'audience'
         ORDER BY post_id DESC LIMIT $3
    ) p
     WHERE EXISTS (SELECT 1 FROM live)
     ORDER BY p.post_id
    ON CONFLICT DO NOTHING
    RETURNING user_id
)"""
    + TOUCHED
)

REMOVE_MEMBER = (
    """
WITH m AS (
    DELETE FROM audience_members WHERE audience_id = $1 AND member_id = $2
), w AS (
    DELETE FROM home_timeline h USING posts p
     WHERE p.audience_id = $1 AND p.visibility = 'audience'
       AND h.user_id = $2 AND h.post_id = p.post_id AND p.author_id <> $2
    RETURNING h.user_id
)"""
    + TOUCHED
)

# Amortized trimming (DESIGN.md §4): a timeline is cut back to the cap only once it has grown
# past cap * 1.25, so most visits delete nothing and a trim deletes many rows at once.
# `cut` is MATERIALIZED so each user's keep_after is computed once: inlined, the planner made
# it a join filter evaluated per home_timeline row (an OFFSET-800 index scan for each of
# millions of rows), and one trim of a wide author's followers ran for over 10 minutes.
TRIM = """
WITH c AS (
    SELECT u AS user_id FROM unnest($1::bigint[]) u
    UNION
    SELECT follower_id FROM follows WHERE followee_id = ANY($2::bigint[]) AND active
), cut AS MATERIALIZED (
    SELECT c.user_id,
           (SELECT h.post_id FROM home_timeline h WHERE h.user_id = c.user_id
             ORDER BY h.post_id DESC OFFSET $3 LIMIT 1) AS keep_after
      FROM c
     WHERE EXISTS (SELECT 1 FROM home_timeline h WHERE h.user_id = c.user_id
                    ORDER BY h.post_id DESC OFFSET $4 LIMIT 1)
)
DELETE FROM home_timeline h USING cut
 WHERE h.user_id = cut.user_id AND h.post_id <= cut.keep_after
"""
