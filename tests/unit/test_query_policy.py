"""Invariant 5: one pure function decides who sees a post (shared.policy, re-exported by
services/query/policy.py next to its SQL twins); block cases. The full matrix is in
tests/unit/test_policy_matrix.py.

Agreement of its SQL twin with it is checked against real PostgreSQL in
tests/integration/test_query_policy.py.
"""

from __future__ import annotations

from services.query.policy import PostFacts, Relations, can_view

AUTHOR = 10
VIEWER = 20
OTHER = 30
POST = PostFacts(author_id=AUTHOR)


def test_author_sees_own_post() -> None:
    assert can_view(AUTHOR, POST, Relations())


def test_author_sees_own_post_even_with_a_stray_self_relation() -> None:
    # A block of oneself is meaningless; it must not hide one's own posts.
    assert can_view(AUTHOR, POST, Relations(blocked=frozenset({AUTHOR})))


def test_stranger_sees_post() -> None:
    assert can_view(VIEWER, POST, Relations())


def test_anonymous_sees_post() -> None:
    assert can_view(None, POST, Relations())


def test_author_blocked_by_viewer_is_hidden() -> None:
    # Relations.blocked is the blocked-either-way set: the loader puts the author there when
    # the viewer blocked them ...
    viewer_blocked_author = Relations(blocked=frozenset({AUTHOR}))
    assert not can_view(VIEWER, POST, viewer_blocked_author)


def test_author_blocking_viewer_is_hidden() -> None:
    # ... and when the author blocked the viewer; the decision is the same either way.
    author_blocked_viewer = Relations(blocked=frozenset({AUTHOR, OTHER}))
    assert not can_view(VIEWER, POST, author_blocked_viewer)


def test_anonymous_is_not_subject_to_blocks() -> None:
    assert can_view(None, POST, Relations(blocked=frozenset({AUTHOR})))


def test_block_with_someone_else_does_not_hide_post() -> None:
    assert can_view(VIEWER, POST, Relations(blocked=frozenset({OTHER})))
