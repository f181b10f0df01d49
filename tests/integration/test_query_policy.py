"""Invariant 5 across read paths: the SQL twin of the policy (bulk pages) and can_view over
fetched facts (single posts) agree with the pure can_view, for every combination of viewer and
block state between viewer and author."""

from __future__ import annotations

import itertools
import uuid

import asyncpg
import pytest

from services.query import repository
from services.query.pagination import Page
from services.query.policy import PostFacts, Relations, can_view
from shared.ids import SnowflakeGenerator, snowflake_time, uuid7
from shared.settings import Settings

pytestmark = pytest.mark.integration

_ids = SnowflakeGenerator(worker_id=1022)

VIEWERS = ("anonymous", "author", "other")
# The state of one block edge: no row, an active row, a row left by an unblock.
EDGES = ("none", "active", "inactive")
CASES = list(itertools.product(VIEWERS, EDGES, EDGES))


async def _user(conn: asyncpg.Connection) -> int:
    user_id = _ids.next_id()
    await conn.execute(
        "INSERT INTO users (user_id, username, created_at) VALUES ($1, $2, $3)",
        user_id,
        f"p{uuid.uuid4().hex[:12]}",
        snowflake_time(user_id),
    )
    return user_id


async def _block(conn: asyncpg.Connection, blocker: int, blocked: int, edge: str) -> None:
    if edge == "none":
        return
    # ON CONFLICT: with viewer == author both edges are the same (meaningless) self-block row.
    await conn.execute(
        "INSERT INTO blocks (blocker_id, blocked_id, active, version, last_block_version, since)"
        " VALUES ($1, $2, $3, $4, $4, now()) ON CONFLICT DO NOTHING",
        blocker,
        blocked,
        edge == "active",
        uuid7(),
    )


@pytest.mark.parametrize(("viewer_kind", "viewer_to_author", "author_to_viewer"), CASES)
async def test_sql_filter_and_can_view_agree(
    db: asyncpg.Connection,
    settings: Settings,
    viewer_kind: str,
    viewer_to_author: str,
    author_to_viewer: str,
) -> None:
    author = await _user(db)
    person = author if viewer_kind == "author" else await _user(db)
    # For an anonymous viewer the block edges still exist, between the author and someone.
    viewer = None if viewer_kind == "anonymous" else person
    await _block(db, person, author, viewer_to_author)
    await _block(db, author, person, author_to_viewer)
    post_id = _ids.next_id()
    await db.execute(
        "INSERT INTO posts (post_id, author_id, text, created_at) VALUES ($1, $2, 'x', now())",
        post_id,
        author,
    )
    await db.execute(
        "INSERT INTO home_timeline (user_id, post_id, author_id) VALUES ($1, $2, $3)",
        person,
        post_id,
        author,
    )

    # The truth, from the case's facts and the pure function alone.
    blocked = "active" in (viewer_to_author, author_to_viewer) and person != author
    facts = Relations(blocked=frozenset({author}) if blocked else frozenset())
    expected = can_view(viewer, PostFacts(author_id=author), facts)

    # Single-post path: facts fetched by SQL, decided by can_view.
    single = can_view(
        viewer, PostFacts(author_id=author), await repository.relations(db, viewer, [author])
    )
    # Bulk paths: decided by the SQL twin.
    in_author_posts = post_id in [
        r["key"] for r in await repository.user_posts(db, viewer, author, Page())
    ]
    assert (single, in_author_posts) == (expected, expected)
    if viewer is not None:
        home = await repository.home_timeline(db, viewer, Page())
        assert (post_id in [r["key"] for r in home]) == expected

    # And the expectation itself, spelled out: only a person in an active block is refused.
    assert expected == (viewer is None or viewer == author or not blocked)
