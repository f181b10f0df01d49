"""Followers, following, relationships, follow requests, audiences, notifications and search
through HTTP against real PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from tests.integration import test_query_api as api
from tests.integration.test_query_api import Seed, _ids, assert_problem, ids, links

pytestmark = pytest.mark.integration

# The query API suite's fixtures: one app per module, rows seeded with SQL.
client, seed, query_settings = api.client, api.seed, api.query_settings


def user_ids(body: list[dict[str, Any]]) -> list[int]:
    return [int(a["user_id"]) for a in body]


async def test_followers_and_following_hide_blocked_pairs(client: Any, seed: Seed) -> None:
    user, viewer, a, b, blocked, old = [await seed.user() for _ in range(6)]
    for follower in (a, b, blocked):
        await seed.follow(follower, user)
    await seed.follow(old, user, active=False)
    await seed.follow(user, a)
    await seed.block(viewer, blocked)

    anon = await client.get(f"/v1/users/{user}/followers?limit=2")
    assert user_ids(await anon.json()) == [blocked, b]
    rest = await client.get(links(anon)["next"].path_qs)
    assert user_ids(await rest.json()) == [a]
    mine = await client.get(f"/v1/users/{user}/followers", headers=seed.auth(viewer))
    assert user_ids(await mine.json()) == [b, a]
    following = await (await client.get(f"/v1/users/{user}/following")).json()
    assert following == [
        {
            "user_id": str(a),
            "username": following[0]["username"],
            "display_name": "",
            "avatar_url": None,
        }
    ]
    # Lists of a user blocked either way are 404, like the user's posts.
    for route in ("followers", "following"):
        await assert_problem(
            await client.get(f"/v1/users/{blocked}/{route}", headers=seed.auth(viewer)),
            404,
            "not_found",
        )
        await assert_problem(
            await client.get(f"/v1/users/{_ids.next_id()}/{route}"), 404, "not_found"
        )


async def test_relationships(client: Any, seed: Seed, db: asyncpg.Connection) -> None:
    me, friend, fan, blocked, blocker, muted, requested, nobody = [
        await seed.user() for _ in range(8)
    ]
    await seed.follow(me, friend)
    await seed.follow(fan, me)
    await seed.block(me, blocked)
    await seed.block(blocker, me)
    until = datetime.now(UTC) + timedelta(hours=1)
    await seed.mute(me, muted, until)
    await db.execute(
        "INSERT INTO follow_requests (follower_id, followee_id, version, requested_at)"
        " VALUES ($1, $2, $3, now())",
        me,
        requested,
        uuid.uuid4(),
    )
    query = "&".join(f"id={u}" for u in (friend, fan, blocked, blocker, muted, requested, nobody))
    body = await (await client.get(f"/v1/relationships?{query}", headers=seed.auth(me))).json()
    flags = {int(r["id"]): {k for k, v in r.items() if v is True} for r in body}
    assert flags == {
        friend: {"following"},
        fan: {"followed_by"},
        blocked: {"blocking"},
        blocker: {"blocked_by"},
        muted: {"muting"},
        requested: {"requested"},
        nobody: set(),
    }
    assert datetime.fromisoformat(body[4]["muting_expires_at"]) == until
    assert (await (await client.get("/v1/relationships", headers=seed.auth(me))).json()) == []
    await assert_problem(await client.get(f"/v1/relationships?id={friend}"), 401, "unauthorized")
    await assert_problem(
        await client.get("/v1/relationships?id=zz", headers=seed.auth(me)), 422, "invalid_id", "id"
    )
    many = "&".join(f"id={i + 1}" for i in range(41))
    await assert_problem(
        await client.get(f"/v1/relationships?{many}", headers=seed.auth(me)),
        422,
        "invalid_field",
        "id",
    )


async def test_follow_requests_and_audiences_are_owner_only(
    client: Any, seed: Seed, db: asyncpg.Connection
) -> None:
    me, asker, blocked_asker, member, other = [await seed.user() for _ in range(5)]
    for follower in (asker, blocked_asker):
        await db.execute(
            "INSERT INTO follow_requests (follower_id, followee_id, version, requested_at)"
            " VALUES ($1, $2, $3, now())",
            follower,
            me,
            uuid.uuid4(),
        )
    await seed.block(me, blocked_asker)
    body = await (await client.get("/v1/follow_requests", headers=seed.auth(me))).json()
    assert user_ids(body) == [asker]
    await assert_problem(await client.get("/v1/follow_requests"), 401, "unauthorized")

    audience = await seed.audience(me, "Inner circle", (member, other))
    lists = await (await client.get("/v1/audiences", headers=seed.auth(me))).json()
    assert [(a["audience_id"], a["name"], a["members_count"]) for a in lists] == [
        (str(audience), "Inner circle", 2)
    ]
    assert await (await client.get("/v1/audiences", headers=seed.auth(member))).json() == []
    members = await client.get(f"/v1/audiences/{audience}/members", headers=seed.auth(me))
    assert user_ids(await members.json()) == [other, member]
    for who in (member, other):
        await assert_problem(
            await client.get(f"/v1/audiences/{audience}/members", headers=seed.auth(who)),
            404,
            "not_found",
        )


async def test_notifications_filter_at_read_time(client: Any, seed: Seed) -> None:
    me, fan, blocked, muted, author = [await seed.user() for _ in range(5)]
    await seed.block(me, blocked)
    await seed.mute(me, muted)
    mine = await seed.post(me, "mine")
    hidden = await seed.post(author, "to followers", visibility="followers", mentions=(me,))
    await seed.follow(fan, me)
    follow = await seed.notification(me, "follow", fan)
    await seed.like(fan, mine)
    like = await seed.notification(me, "like", fan, mine)
    await seed.like(blocked, mine)
    await seed.notification(me, "like", blocked, mine)
    # Undone causes: an unfollow, an unlike, an un-repost.
    await seed.follow(author, me, active=False)
    await seed.notification(me, "follow", author)
    await seed.notification(me, "like", author, mine)
    await seed.notification(me, "repost", author, mine)
    await seed.notification(me, "mention", muted, mine)
    mention = await seed.notification(me, "mention", author, hidden)
    gone = await seed.post(me, "soon deleted")
    await seed.notification(me, "reply", fan, gone)
    await seed.delete(gone)

    response = await client.get("/v1/notifications", headers=seed.auth(me))
    body = await response.json()
    assert [(n["id"], n["type"]) for n in body] == [
        (str(mention), "mention"),
        (str(like), "like"),
        (str(follow), "follow"),
    ]
    assert body[1]["account"]["user_id"] == str(fan)
    assert body[1]["post"]["post_id"] == str(mine)
    assert "post" not in body[2]

    page = await client.get("/v1/notifications?limit=1", headers=seed.auth(me))
    assert [n["id"] for n in await page.json()] == [str(mention)]
    nxt = links(page)["next"]
    assert nxt.query["max_id"] == str(mention)
    assert [
        n["id"] for n in await (await client.get(nxt.path_qs, headers=seed.auth(me))).json()
    ] == [str(like)]
    await assert_problem(
        await client.get("/v1/notifications?max_id=12", headers=seed.auth(me)),
        422,
        "invalid_id",
        "max_id",
    )
    await assert_problem(await client.get("/v1/notifications"), 401, "unauthorized")


async def test_search_posts_and_accounts(client: Any, seed: Seed) -> None:
    word = f"zq{uuid.uuid4().hex[:10]}"
    author, viewer, muted = [await seed.user(f"{word}{i}", display_name=f"D{i}") for i in range(3)]
    other = await seed.user(display_name=f"{word.upper()} Display")
    await seed.mute(viewer, muted)
    public = await seed.post(author, f"hello {word} world")
    followers = await seed.post(author, f"secret {word}", visibility="followers")
    unlisted = await seed.post(author, f"quiet {word}", visibility="unlisted")
    muted_post = await seed.post(muted, f"noise {word}")
    await seed.post(author, "unrelated")

    anon = await (await client.get(f"/v1/search?q={word}&type=posts")).json()
    assert ids(anon["posts"]) == [muted_post, public]
    assert anon["accounts"] == []
    signed = await (
        await client.get(f"/v1/search?q={word}&type=posts", headers=seed.auth(viewer))
    ).json()
    assert ids(signed["posts"]) == [unlisted, public]
    await seed.follow(viewer, author)
    both = await (await client.get(f"/v1/search?q={word}", headers=seed.auth(viewer))).json()
    assert ids(both["posts"]) == [unlisted, followers, public]
    assert user_ids(both["accounts"]) == [other, muted, viewer, author]

    page = await client.get(f"/v1/search?q=%40{word}&type=accounts&limit=2")
    assert user_ids((await page.json())["accounts"]) == [
        other,
        muted,
    ]
    assert links(page)["next"].query["q"] == f"@{word}"
    # LIKE wildcards are plain characters.
    wild = await (await client.get("/v1/search?q=%25&type=accounts")).json()
    assert wild["accounts"] == []

    for bad in ("", "%20%20", "x" * 201):
        await assert_problem(await client.get(f"/v1/search?q={bad}"), 422, "invalid_field", "q")
    await assert_problem(await client.get("/v1/search"), 422, "invalid_field", "q")
    await assert_problem(await client.get("/v1/search?q=a&type=tags"), 422, "invalid_field", "type")
