"""The SQL twins of shared.policy (invariant 5) for reads that return pages.

`shared.policy.can_view` / `shows_in_feed` are the rule. Single-post reads fetch the facts
(`PostFacts`, `Relations`) and call them. Pages cannot fetch rows and then drop some in Python
without breaking keyset pagination (a page would come back short), so they filter in SQL with
the conditions below, which must accept exactly the posts the pure functions accept;
tests/integration/test_query_policy_sql.py checks them against every cell of the matrix in
tests/unit/test_policy_matrix.py. Change them together.

Every argument is a trusted SQL snippet written in our own queries (a parameter placeholder such
as `$1::bigint`, or a table alias), never user input. Each condition is TRUE or FALSE, never
NULL, even for an anonymous (NULL) viewer, so it can be negated safely.
"""

from __future__ import annotations

from shared.policy import PostFacts, Relations, can_view, is_muted, shows_in_feed

__all__ = [
    "PostFacts",
    "Relations",
    "blocked_sql",
    "can_view",
    "feed_sql",
    "is_muted",
    "muted_sql",
    "shows_in_feed",
    "visible_sql",
]


def blocked_sql(viewer: str, user: str) -> str:
    """An active block between the viewer and `user`, in either direction (anonymous: none).
    Each EXISTS is one primary-key probe of `blocks`."""
    return (
        f"({viewer} IS NOT NULL AND (EXISTS (SELECT 1 FROM blocks b WHERE b.blocker_id = {viewer}"
        f" AND b.blocked_id = {user} AND b.active)"
        f" OR EXISTS (SELECT 1 FROM blocks b WHERE b.blocker_id = {user}"
        f" AND b.blocked_id = {viewer} AND b.active)))"
    )


def muted_sql(viewer: str, user: str) -> str:
    """The viewer mutes `user` with a mute not yet expired (`is_muted`, checked at read time)."""
    return (
        f"({viewer} IS NOT NULL AND EXISTS (SELECT 1 FROM mutes m WHERE m.muter_id = {viewer}"
        f" AND m.muted_id = {user} AND m.active"
        " AND (m.expires_at IS NULL OR m.expires_at > now())))"
    )


def visible_sql(viewer: str, post: str = "p") -> str:
    """`can_view(viewer, post)` for the `posts` row aliased `post`."""
    author = f"{post}.author_id"
    return (
        f"(({viewer} IS NOT NULL AND {author} = {viewer}) OR (NOT {blocked_sql(viewer, author)}"
        f" AND ({post}.visibility IN ('public', 'unlisted')"
        f" OR ({post}.visibility = 'followers' AND {viewer} IS NOT NULL"
        f" AND ({viewer} = ANY({post}.mentions) OR EXISTS (SELECT 1 FROM follows f"
        f" WHERE f.follower_id = {viewer} AND f.followee_id = {author} AND f.active)))"
        f" OR ({post}.visibility = 'audience' AND {viewer} IS NOT NULL"
        f" AND EXISTS (SELECT 1 FROM audience_members am"
        f" WHERE am.audience_id = {post}.audience_id AND am.member_id = {viewer}))"
        f" OR ({post}.visibility = 'direct' AND {viewer} IS NOT NULL"
        f" AND {viewer} = ANY({post}.mentions)))))"
    )


def feed_sql(viewer: str, post: str = "p") -> str:
    """`shows_in_feed(viewer, post, now())`: visible, and the author is not muted (own posts
    always show)."""
    author = f"{post}.author_id"
    return (
        f"({visible_sql(viewer, post)} AND (({viewer} IS NOT NULL AND {author} = {viewer})"
        f" OR NOT {muted_sql(viewer, author)}))"
    )
