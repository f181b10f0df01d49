"""SQL pieces shared by the post and relation statements (sql_posts.py, sql_relations.py)."""

from __future__ import annotations

# Above this many distinct users a statement reports "many" instead of naming them.
TOUCHED_LIMIT = 500

TOUCHED = f"""
SELECT count(*)::bigint AS n,
       CASE WHEN count(DISTINCT user_id) <= {TOUCHED_LIMIT}
            THEN array_agg(DISTINCT user_id) END AS users
  FROM w
"""

# The end of every statement that shows reposts in timelines, after a `cand` CTE of
# (user_id, repost_id, reposter_id, post_id): one row per original and user, the earliest
# repost winning; a later repost already shown gives way to an earlier one.
REPOST_INSERT = (
    """), ins AS (
    INSERT INTO home_timeline (user_id, post_id, author_id, reposted_post_id)
    SELECT c.user_id, c.repost_id, c.reposter_id, c.post_id FROM cand c
     WHERE NOT EXISTS (SELECT 1 FROM home_timeline h
                        WHERE h.user_id = c.user_id AND h.post_id = c.post_id)
       AND NOT EXISTS (SELECT 1 FROM home_timeline h
                        WHERE h.user_id = c.user_id AND h.reposted_post_id = c.post_id
                          AND h.post_id < c.repost_id)
     ORDER BY c.user_id, c.repost_id
    ON CONFLICT DO NOTHING
    RETURNING user_id, post_id, reposted_post_id
), del AS (
    DELETE FROM home_timeline h USING ins
     WHERE h.user_id = ins.user_id AND h.reposted_post_id = ins.reposted_post_id
       AND h.post_id > ins.post_id
    RETURNING h.user_id
), w AS (SELECT user_id FROM ins UNION ALL SELECT user_id FROM del)
"""
    + TOUCHED
)
