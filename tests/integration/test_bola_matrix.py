"""BOLA matrix end to end (issue #4): every read route that can reveal a post, for every viewer
kind and every visibility, against the real query app and real PostgreSQL.

One author writes one post of each visibility. Rows a viewer must not see are seeded anyway
(home_timeline fan-out to everyone, hashtag rows for every visibility, a mention notification
for every viewer), so what is tested is the read-time check, not the projector's fan-out. The
expected answer of each cell comes from shared.policy (can_view / shows_in_feed) on PostFacts
and Relations built from the viewer's role; a post the viewer may not see must be 404 on the
single-post routes and absent from every list, and a post they may see must be present where
the route's semantics include it.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Final

import asyncpg
import pytest

from shared.policy import PostFacts, Relations, can_view, shows_in_feed
from tests.integration import test_query_api as api
from tests.integration.test_query_api import Seed
from tests.unit.test_policy_matrix import MATRIX, ROLES, VISIBILITIES

pytestmark = pytest.mark.integration

# The query API suite's fixtures: one app per module, rows seeded with SQL.
client, seed, query_settings = api.client, api.seed, api.query_settings

SINGLE_POST_ROUTES: Final = ("post", "context", "history")
LIST_ROUTES: Final = (
    "thread",  # the post as a reply in its conversation: GET /v1/posts/{root}/context
    "user_posts",
    "home",
    "public",
    "tag",
    "search",
    "notifications",
)
ROUTES: Final = (*SINGLE_POST_ROUTES, *LIST_ROUTES)
BLOCKED_ROLES: Final = frozenset({"blocked", "blocked_by"})


def relations_of(role: str, author: int, audience: int) -> Relations:
    """The viewer's relations with the author, as the role in ROLES describes them."""
    spec = ROLES[role]
    blocked = spec.get("blocks_author") or spec.get("blocked_by_author")
    return Relations(
        blocked=frozenset({author}) if blocked else frozenset(),
        following=frozenset({author}) if spec.get("follows") else frozenset(),
        audiences=frozenset({audience}) if spec.get("member") else frozenset(),
        muted={author: None} if spec.get("mutes") else {},
    )


def expected_present(
    route: str, viewer: int | None, facts: PostFacts, relations: Relations, now: datetime
) -> bool:
    """Whether the route's semantics show the post to the viewer (True: 200 / listed)."""
    visible = can_view(viewer, facts, relations)
    feed = shows_in_feed(viewer, facts, relations, now)
    match route:
        case "post" | "context" | "history" | "thread" | "user_posts":
            return visible
        case "home" | "notifications":
            return viewer is not None and feed
        case "public" | "tag":
            return facts.visibility == "public" and feed
        case "search":
            # Anonymous readers search public posts only (repository._SEARCH_POSTS).
            return feed and (viewer is not None or facts.visibility == "public")
    raise AssertionError(route)


def allowed_statuses(route: str, role: str, viewer: int | None) -> frozenset[int]:
    """Statuses a list route may answer; anything else is a failure of its own."""
    if route in ("home", "notifications"):
        return frozenset({200} if viewer is not None else {401})
    if route == "user_posts" and role in BLOCKED_ROLES:
        return frozenset({404})  # a block hides the whole profile
    return frozenset({200})


async def test_no_read_route_leaks_a_post_the_viewer_may_not_see(
    client: Any, seed: Seed, db: asyncpg.Connection
) -> None:
    author, op = await seed.user(), await seed.user()
    viewers: dict[str, int | None] = {"anonymous": None, "author": author}
    for role in ROLES:
        if role not in viewers:
            viewers[role] = await seed.user()
    signed_in = tuple(v for v in viewers.values() if v is not None)
    members = tuple(v for r, v in viewers.items() if v is not None and ROLES[r].get("member"))
    audience = await seed.audience(author, "bola club", members)
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

    # Distinct words per run and per post: a post "appears" in a response when its marker does,
    # wherever in the body (an item, an embedded notification post, a thread).
    word = f"bola{uuid.uuid4().hex[:10]}"
    tag = f"bolatag{uuid.uuid4().hex[:10]}"
    markers = {vis: f"{word}x{vis}" for vis in VISIBILITIES}
    mentioned = tuple(viewers[r] for r in ("mentioned", "blocked", "blocked_by"))
    # A public root by a third party, so each post also shows as a reply in a thread.
    root = await seed.post(op, f"root of {word}")
    posts: dict[str, int] = {}
    for vis in VISIBILITIES:
        posts[vis] = await seed.post(
            author,
            f"{markers[vis]} {word} #{tag}",
            readers=tuple(v for v in signed_in if v != author),  # fan-out to everyone
            visibility=vis,
            audience_id=audience,
            mentions=mentioned,  # type: ignore[arg-type]
            hashtags=(tag,),
            in_reply_to_id=root,
            conversation_id=root,
        )
    # Seed.post tags public posts only, as the projector does; tag the others too so the
    # hashtag route's own visibility check is what keeps them out.
    await db.executemany(
        "INSERT INTO post_tags (tag, post_id) VALUES ($1, $2)",
        [(tag, pid) for vis, pid in posts.items() if vis != "public"],
    )
    for viewer in signed_in:
        for pid in posts.values():
            await seed.notification(viewer, "mention", author, pid)

    window = f"since_id={root - 1}&max_id={max(posts.values()) + 1}&limit=40"
    list_paths: dict[str, Callable[[], str]] = {
        "thread": lambda: f"/v1/posts/{root}/context",
        "user_posts": lambda: f"/v1/users/{author}/posts?limit=40",
        "home": lambda: "/v1/timelines/home?limit=40",
        "public": lambda: f"/v1/timelines/public?{window}",
        "tag": lambda: f"/v1/timelines/tag/{tag}?limit=40",
        "search": lambda: f"/v1/search?q={word}&type=posts&limit=40",
        "notifications": lambda: "/v1/notifications?limit=40",
    }

    now = datetime.now(UTC)
    leaks: list[str] = []  # shown where the policy hides it: the failure this test exists for
    misses: list[str] = []  # hidden where the route should show it
    broken: list[str] = []  # an unexpected status
    checks = 0
    for role, viewer in viewers.items():
        headers = seed.auth(viewer) if viewer is not None else {}
        relations = relations_of(role, author, audience)
        lists: dict[str, str] = {}
        for route, path in list_paths.items():
            response = await client.get(path(), headers=headers)
            if response.status not in allowed_statuses(route, role, viewer):
                broken.append(f"{route} × {role}: HTTP {response.status}")
            lists[route] = await response.text() if response.status == 200 else ""
        for vis, pid in posts.items():
            facts = PostFacts(
                author_id=author,
                visibility=vis,  # type: ignore[arg-type]
                audience_id=audience,
                mentions=frozenset(mentioned),  # type: ignore[arg-type]
            )
            # The hand-written table and the policy agree on this cell before it is used.
            assert (
                can_view(viewer, facts, relations),
                shows_in_feed(viewer, facts, relations, now),
            ) == MATRIX[role][vis], (role, vis)
            for route in ROUTES:
                checks += 1
                cell = f"{route} × {role} × {vis}"
                if route in SINGLE_POST_ROUTES:
                    suffix = "" if route == "post" else f"/{route}"
                    response = await client.get(f"/v1/posts/{pid}{suffix}", headers=headers)
                    body = await response.text()
                    if response.status not in (200, 404):
                        broken.append(f"{cell}: HTTP {response.status}")
                    present = response.status == 200 or markers[vis] in body
                else:
                    present = markers[vis] in lists[route]
                want = expected_present(route, viewer, facts, relations, now)
                if present and not want:
                    leaks.append(cell)
                elif want and not present:
                    misses.append(cell)

    summary = (
        f"BOLA matrix: {len(viewers)} viewers × {len(VISIBILITIES)} visibilities × "
        f"{len(ROUTES)} routes = {checks} checks, {len(leaks)} leaks, "
        f"{len(misses)} misses, {len(broken)} bad statuses"
    )
    print(summary)
    assert checks == len(viewers) * len(VISIBILITIES) * len(ROUTES)
    assert not leaks and not misses and not broken, "\n".join(
        [summary, *(f"LEAK {c}" for c in leaks), *(f"MISS {c}" for c in misses), *broken]
    )
