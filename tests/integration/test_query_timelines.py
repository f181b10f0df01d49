"""Timelines, single posts, threads and history through HTTP against real PostgreSQL, with the
privacy cases: hidden posts are 404 everywhere, audience names stay with their owner, blocked
and muted accounts are filtered."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from tests.integration import test_query_api as api
from tests.integration.test_query_api import Seed, _ids, assert_problem, ids, links

pytestmark = pytest.mark.integration

# The query API suite's fixtures: one app per module, rows seeded with SQL.
client, seed, query_settings = api.client, api.seed, api.query_settings


async def test_home_shows_reposts_once_with_the_reposter(client: Any, seed: Seed) -> None:
    viewer, friend, stranger, muted_friend = [await seed.user() for _ in range(4)]
    for followee in (friend, muted_friend):
        await seed.follow(viewer, followee)
    await seed.mute(viewer, muted_friend)
    original = await seed.post(stranger, "worth sharing")
    repost = await seed.repost(friend, original, readers=(viewer,))
    hidden_repost = await seed.repost(muted_friend, original, readers=(viewer,))
    own = await seed.post(viewer, "mine")

    body = await (await client.get("/v1/timelines/home", headers=seed.auth(viewer))).json()
    assert [b["post_id"] for b in body] == [str(own), str(original)]
    shared = body[1]
    assert shared["repost_id"] == str(repost)
    assert shared["reposted_by"]["user_id"] == str(friend)
    assert shared["author"]["user_id"] == str(stranger)
    assert "reposted_by" not in body[0] and "repost_id" not in body[0]
    # Pages are keyed by the repost's own id.
    older = await client.get(f"/v1/timelines/home?max_id={repost}", headers=seed.auth(viewer))
    assert await older.json() == []
    assert hidden_repost > repost


async def test_home_rechecks_visibility_and_mutes_at_read_time(client: Any, seed: Seed) -> None:
    viewer, author, muted, expired = [await seed.user() for _ in range(4)]
    await seed.mute(viewer, muted)
    await seed.mute(viewer, expired, datetime.now(UTC) - timedelta(seconds=1))
    # The viewer no longer follows `author`, but the projector has not removed the rows yet.
    followers_only = await seed.post(author, visibility="followers", readers=(viewer,))
    public = await seed.post(author, readers=(viewer,))
    await seed.post(muted, readers=(viewer,))
    shown = await seed.post(expired, readers=(viewer,))

    body = await (await client.get("/v1/timelines/home", headers=seed.auth(viewer))).json()
    assert ids(body) == [shown, public]
    await seed.follow(viewer, author)
    body = await (await client.get("/v1/timelines/home", headers=seed.auth(viewer))).json()
    assert ids(body) == [shown, public, followers_only]


async def test_user_posts_include_reposts_the_viewer_may_view(client: Any, seed: Seed) -> None:
    author, other, viewer = [await seed.user() for _ in range(3)]
    own = await seed.post(author, "own")
    shared = await seed.post(other, "theirs")
    private = await seed.post(other, "private", visibility="followers")
    repost = await seed.repost(author, shared)
    await seed.repost(author, private)  # shows only to those who may view the original

    body = await (await client.get(f"/v1/users/{author}/posts", headers=seed.auth(viewer))).json()
    assert [(b["post_id"], b.get("repost_id")) for b in body] == [
        (str(shared), str(repost)),
        (str(own), None),
    ]
    await seed.follow(viewer, other)
    body = await (await client.get(f"/v1/users/{author}/posts", headers=seed.auth(viewer))).json()
    assert ids(body) == [private, shared, own]
    first = await client.get(f"/v1/users/{author}/posts?limit=2", headers=seed.auth(viewer))
    nxt = links(first)["next"]
    assert nxt.query["max_id"] == str(repost)
    rest = await client.get(nxt.path_qs, headers=seed.auth(viewer))
    assert ids(await rest.json()) == [own]


async def test_public_and_hashtag_timelines(
    client: Any, seed: Seed, db: asyncpg.Connection
) -> None:
    tag = f"t{_ids.next_id()}"
    author, viewer, muted, blocker = [await seed.user() for _ in range(4)]
    await seed.mute(viewer, muted)
    await seed.block(blocker, viewer)
    public = await seed.post(author, f"#{tag}", hashtags=(tag,))
    await seed.post(author, "unlisted", visibility="unlisted", hashtags=(tag,))
    await seed.post(author, "followers", visibility="followers", hashtags=(tag,))
    muted_post = await seed.post(muted, f"#{tag}", hashtags=(tag,))
    blocked_post = await seed.post(blocker, f"#{tag}", hashtags=(tag,))
    await seed.repost(author, public)

    anonymous = await (await client.get(f"/v1/timelines/tag/{tag.upper()}")).json()
    assert ids(anonymous) == [blocked_post, muted_post, public]
    mine = await client.get(f"/v1/timelines/tag/{tag}", headers=seed.auth(viewer))
    assert ids(await mine.json()) == [public]

    since = await client.get(f"/v1/timelines/public?since_id={public - 1}&limit=40")
    assert public in ids(await since.json())
    signed = await client.get(
        f"/v1/timelines/public?since_id={public - 1}&limit=40", headers=seed.auth(viewer)
    )
    seen = ids(await signed.json())
    assert public in seen and muted_post not in seen and blocked_post not in seen
    assert all(item.get("repost_id") is None for item in await since.json())

    await assert_problem(await client.get("/v1/timelines/tag/no-dash"), 422, "invalid_field", "tag")


async def test_hidden_posts_are_404_everywhere(client: Any, seed: Seed) -> None:
    author, member, stranger = [await seed.user() for _ in range(3)]
    audience = await seed.audience(author, "Secret Club Name", (member,))
    post = await seed.post(author, visibility="audience", audience_id=audience)

    owner_view = await (await client.get(f"/v1/posts/{post}", headers=seed.auth(author))).json()
    assert owner_view["audience_name"] == "Secret Club Name"
    member_view = await client.get(f"/v1/posts/{post}", headers=seed.auth(member))
    assert "Secret Club Name" not in await member_view.text()
    assert "audience_name" not in await member_view.json()
    home = await client.get("/v1/timelines/home", headers=seed.auth(author))
    assert "Secret Club Name" in await home.text()

    for route in ("", "/context", "/history"):
        for headers in ({}, seed.auth(stranger)):
            await assert_problem(
                await client.get(f"/v1/posts/{post}{route}", headers=headers), 404, "not_found"
            )
        ok = await client.get(f"/v1/posts/{post}{route}", headers=seed.auth(member))
        assert ok.status == 200
    await assert_problem(await client.get("/v1/posts/x/context"), 422, "invalid_id", "post_id")


async def test_context_filters_each_post_and_orders_the_thread(client: Any, seed: Seed) -> None:
    alice, bob, carol, viewer = [await seed.user() for _ in range(4)]
    root = await seed.post(alice, "root")
    r1 = await seed.post(bob, "r1", in_reply_to_id=root, conversation_id=root)
    hidden = await seed.post(
        carol, "hidden", visibility="followers", in_reply_to_id=r1, conversation_id=root
    )
    under_hidden = await seed.post(bob, "under", in_reply_to_id=hidden, conversation_id=root)
    r2 = await seed.post(alice, "r2", in_reply_to_id=root, conversation_id=root)
    r1a = await seed.post(alice, "r1a", in_reply_to_id=r1, conversation_id=root)

    root_ctx = await (
        await client.get(f"/v1/posts/{root}/context", headers=seed.auth(viewer))
    ).json()
    assert root_ctx["ancestors"] == []
    # Depth-first by time; the hidden reply is left out but its own reply still shows.
    assert ids(root_ctx["descendants"]) == [r1, under_hidden, r1a, r2]
    leaf = await (
        await client.get(f"/v1/posts/{under_hidden}/context", headers=seed.auth(viewer))
    ).json()
    assert ids(leaf["ancestors"]) == [root, r1]
    assert leaf["descendants"] == []
    await seed.follow(viewer, carol)
    leaf = await (
        await client.get(f"/v1/posts/{under_hidden}/context", headers=seed.auth(viewer))
    ).json()
    assert ids(leaf["ancestors"]) == [root, r1, hidden]


async def test_history_lists_versions(client: Any, seed: Seed, db: asyncpg.Connection) -> None:
    author = await seed.user()
    post = await seed.post(author, "second")
    never_edited = await seed.post(author, "only")
    await db.executemany(
        "INSERT INTO post_versions (post_id, version, text, created_at) VALUES ($1, $2, $3, now())",
        [(post, 0, "first"), (post, 1, "second")],
    )
    body = await (await client.get(f"/v1/posts/{post}/history")).json()
    assert [(v["version"], v["text"], v["media"]) for v in body] == [
        (0, "first", []),
        (1, "second", []),
    ]
    body = await (await client.get(f"/v1/posts/{never_edited}/history")).json()
    assert [(v["version"], v["text"]) for v in body] == [(0, "only")]
