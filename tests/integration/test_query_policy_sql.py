"""The SQL twins of the policy (services/query/policy.py) agree with shared.policy on every
cell of the matrix in tests/unit/test_policy_matrix.py, on real PostgreSQL; and so do the
relations loader and the single-post route."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from services.query import repository
from services.query.policy import feed_sql, shows_in_feed, visible_sql
from shared.policy import PostFacts, can_view
from tests.integration import test_query_api as api
from tests.integration.test_query_api import Seed
from tests.unit.test_policy_matrix import MATRIX, ROLES, VISIBILITIES

pytestmark = pytest.mark.integration

# The query API suite's fixtures: one app per module, rows seeded with SQL.
client, seed, query_settings = api.client, api.seed, api.query_settings

_DECIDE = f"""
SELECT {visible_sql("$1::bigint")} AS visible, {feed_sql("$1::bigint")} AS feed
FROM posts p WHERE p.post_id = $2
"""


async def test_sql_twin_agrees_with_the_pure_policy_on_every_cell(
    client: Any, seed: Seed, db: asyncpg.Connection
) -> None:
    author = await seed.user()
    viewers: dict[str, int | None] = {"anonymous": None, "author": author}
    for role in ROLES:
        if role not in viewers:
            viewers[role] = await seed.user()
    audience = await seed.audience(
        author, "close friends", tuple(v for r, v in viewers.items() if ROLES[r].get("member"))
    )
    for role, spec in ROLES.items():
        viewer = viewers[role]
        if viewer is None or viewer == author:
            continue
        if spec.get("follows"):
            await seed.follow(viewer, author)
        if spec.get("blocks_author"):
            await seed.block(viewer, author)
        if spec.get("blocked_by_author"):
            await seed.block(author, viewer)
        if spec.get("mutes"):
            await seed.mute(viewer, author)
    # An expired mute and a stale (inactive) block change nothing.
    await seed.mute(viewers["stranger"], author, datetime.now(UTC) - timedelta(minutes=1))  # type: ignore[arg-type]
    await seed.block(viewers["follower"], author, active=False)  # type: ignore[arg-type]
    mentioned = tuple(viewers[r] for r in ("mentioned", "blocked", "blocked_by"))
    posts = {
        vis: await seed.post(
            author,
            visibility=vis,
            audience_id=audience,
            mentions=mentioned,  # type: ignore[arg-type]
        )
        for vis in VISIBILITIES
    }

    now = datetime.now(UTC)
    for role, viewer in viewers.items():
        relations = await repository.relations(db, viewer, [author], [audience])
        for vis, post_id in posts.items():
            expected = MATRIX[role][vis]
            facts = PostFacts(
                author_id=author,
                visibility=vis,  # type: ignore[arg-type]
                audience_id=audience,
                mentions=frozenset(mentioned),  # type: ignore[arg-type]
            )
            pure = (
                can_view(viewer, facts, relations),
                shows_in_feed(viewer, facts, relations, now),
            )
            row = await db.fetchrow(_DECIDE, viewer, post_id)
            assert row is not None
            assert pure == expected, (role, vis)
            assert (row["visible"], row["feed"]) == expected, (role, vis)
            headers = seed.auth(viewer) if viewer is not None else {}
            response = await client.get(f"/v1/posts/{post_id}", headers=headers)
            assert response.status == (200 if expected[0] else 404), (role, vis)
