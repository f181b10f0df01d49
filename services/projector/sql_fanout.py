"""SQL of a run of new posts' fan-out into home timelines (the write side of fan-out on
write), and of the report of whose timelines it reached. store.py decides which runs."""

from __future__ import annotations

from services.projector.sql_timeline import TOUCHED_LIMIT

# A fan-out reports its rows by its command status and, only when there are at most
# TOUCHED_SCAN_LIMIT of them, names its readers with FAN_OUT_READERS; above that the answer is
# "many" (it would be unless each user got 20 rows).
TOUCHED_SCAN_LIMIT = 20 * TOUCHED_LIMIT

# The fan-out of posts INSERT_POSTS just stored ($1: their ids), by visibility: the author's
# active followers (public, unlisted, followers; not for a pulled post, which reads merge),
# the audience's members (audience), the mentioned users (direct), and always the author.
# Blocks and mutes are not checked here: a block ends the follow edges between the pair (so a
# follower never blocks the author) and the query side checks blocks and mutes again at read
# time.
#
# This is the hot path the benchmark compares with a bare INSERT … SELECT, so it does only
# what that does plus a sort:
# - no ON CONFLICT: every row's key is new. The post id was not in `posts` before this
#   transaction (INSERT_POSTS returned it), and every other timeline writer derives its rows'
#   post_id from a row of `posts` (merges; committed, so never this post before this
#   transaction commits) or a repost id (reposts; see `id_taken`); within the
#   statement each branch yields a reader once (follows' and audience_members' keys; DISTINCT
#   mentions), the branches exclude the author, whose row the last branch adds, and only one
#   of the first three applies to a post.
# - rows sorted by user_id: the follow join yields them grouped by author, and inserting them
#   in index order took 40 % less CPU than inserting them scattered (a 1,000-post run, ~100 K
#   rows, 10 K users); it also makes concurrent writers take index locks in one order. One key,
#   not (user_id, post_id): a user's rows of one run share a leaf page anyway, and the sort took
#   ~25 ms instead of ~50 ms of a ~500 ms statement (EXPLAIN ANALYZE, 1,000 posts, ~100 K rows).
#   (The bare INSERT … SELECT gets that order for free from its sequential scan of `follows`.)
# - no RETURNING: collecting every row to count and name its readers cost another ~35 ms per
#   ~100 K rows; the command status counts them, and FAN_OUT_READERS names the readers of a
#   small fan-out (the only case where they are named). The serial write path of the
#   benchmark's 20,000 posts (1,000 per batch) took 13.3 s instead of 14.9 s with both changes.
_READERS = """
WITH n AS (
    SELECT post_id, author_id, visibility, audience_id, mentions, pulled
      FROM posts WHERE post_id = ANY($1::bigint[])
), r AS (
    SELECT f.follower_id AS user_id, n.post_id, n.author_id
      FROM n JOIN follows f ON f.followee_id = n.author_id AND f.active
     WHERE n.visibility IN ('public', 'unlisted', 'followers') AND NOT n.pulled
       AND f.follower_id <> n.author_id
    UNION ALL
    SELECT m.member_id, n.post_id, n.author_id
      FROM n JOIN audience_members m ON m.audience_id = n.audience_id
     WHERE n.visibility = 'audience' AND m.member_id <> n.author_id
    UNION ALL
    SELECT DISTINCT u.user_id, n.post_id, n.author_id
      FROM n CROSS JOIN LATERAL unnest(n.mentions) AS u(user_id)
     WHERE n.visibility = 'direct' AND u.user_id <> n.author_id
    UNION ALL
    SELECT n.author_id, n.post_id, n.author_id FROM n
)"""
_FAN_OUT = (
    _READERS
    + """
INSERT INTO home_timeline (user_id, post_id, author_id)
SELECT r.user_id, r.post_id, r.author_id FROM r
 ORDER BY r.user_id
{on_conflict}
"""
)
FAN_OUT = _FAN_OUT.format(on_conflict="")
# Only when a post's id is already a repost's (`id_taken`): the repost's timeline rows share
# the key, and the old row stays.
FAN_OUT_GUARDED = _FAN_OUT.format(on_conflict="ON CONFLICT DO NOTHING")
# A small run (live: what arrived during the previous batch) inserts and reports in one
# statement: its count, and its readers when there are at most TOUCHED_LIMIT of them (NULL
# otherwise, or above TOUCHED_SCAN_LIMIT rows without looking). For a few thousand rows the
# RETURNING costs less than running the join again for FAN_OUT_READERS, which in the default
# benchmark's mixed load (100 posts/s) made the fan-out's share of PostgreSQL's active time
# about as large as the home reads'.
SMALL_RUN_POSTS = 50
_FAN_OUT_REPORTED = (
    _READERS
    + """, w AS (
    INSERT INTO home_timeline (user_id, post_id, author_id)
    SELECT r.user_id, r.post_id, r.author_id FROM r
     ORDER BY r.user_id
    {on_conflict}
    RETURNING user_id
)
SELECT c.n,
       CASE WHEN c.n <= """
    + str(TOUCHED_SCAN_LIMIT)
    + """ THEN (
           SELECT CASE WHEN count(DISTINCT user_id) <= """
    + str(TOUCHED_LIMIT)
    + """ THEN array_agg(DISTINCT user_id) END
             FROM w) END AS users
  FROM (SELECT count(*)::bigint AS n FROM w) c
"""
)
FAN_OUT_REPORTED = _FAN_OUT_REPORTED.format(on_conflict="")
FAN_OUT_REPORTED_GUARDED = _FAN_OUT_REPORTED.format(on_conflict="ON CONFLICT DO NOTHING")
# The readers of a fan-out of at most TOUCHED_SCAN_LIMIT rows, or NULL for more than
# TOUCHED_LIMIT of them: run right after it in the same transaction, the same rows (with
# FAN_OUT_GUARDED perhaps a reader whose row was already there: one wake-up too many).
FAN_OUT_READERS = (
    _READERS
    + f"""
SELECT CASE WHEN count(DISTINCT user_id) <= {TOUCHED_LIMIT} THEN array_agg(DISTINCT user_id) END
  FROM r
"""
)
