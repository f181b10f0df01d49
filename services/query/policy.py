"""Who may see which post (invariant 5): one pure decision, and its SQL twin for bulk reads.

`can_view` is the rule. Single-post reads fetch the facts (`PostFacts`, `Relations`) and call it.
Bulk reads cannot fetch a page and then drop rows in Python without breaking keyset pagination
(a page would come back short), so they filter in SQL with `visible_sql`, which must accept
exactly the posts `can_view` accepts; tests/integration/test_query_policy.py checks the two
agree over every combination of viewer and block state. Change them together.

Growing the policy: a visibility kind (public/followers/audience/direct) becomes a field of
`PostFacts`; follows and mutes become sets in `Relations`; each new rule is a line in `can_view`
and a conjunct in `visible_sql`.
"""

from __future__ import annotations

import msgspec


class PostFacts(msgspec.Struct, frozen=True, kw_only=True):
    """What the policy needs to know about a post."""

    author_id: int


class Relations(msgspec.Struct, frozen=True, kw_only=True):
    """The viewer's relations that matter to the posts being decided.

    `blocked`: ids of users with an active block between them and the viewer, in either
    direction. Loaders may restrict it to the authors at hand; that changes no decision.
    """

    blocked: frozenset[int] = frozenset()


def can_view(viewer_id: int | None, post: PostFacts, relations: Relations) -> bool:
    """True when `viewer_id` (None: anonymous) may see `post`."""
    if viewer_id is None:
        # Blocks bind accounts, and an anonymous reader has none; every post is public today.
        return True
    if viewer_id == post.author_id:
        return True
    return post.author_id not in relations.blocked


def visible_sql(viewer: str, author: str) -> str:
    """A SQL condition that holds exactly when `can_view` would answer True.

    `viewer` is a bigint parameter placeholder (NULL for anonymous), `author` the column that
    holds the post's author id. Both are trusted SQL snippets written in our own queries, never
    user input. Each NOT EXISTS is one primary-key probe of `blocks`.
    """
    return (
        f"({viewer} IS NULL OR {author} = {viewer} OR ("
        f"NOT EXISTS (SELECT 1 FROM blocks b WHERE b.blocker_id = {viewer}"
        f" AND b.blocked_id = {author} AND b.active)"
        f" AND NOT EXISTS (SELECT 1 FROM blocks b WHERE b.blocker_id = {author}"
        f" AND b.blocked_id = {viewer} AND b.active)))"
    )
