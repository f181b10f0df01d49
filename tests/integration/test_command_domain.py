"""The complete domain's commands against real Kafka and PostgreSQL: visibility, audiences,
replies, quotes, mentions, media, edits, reposts, likes.

Every refusal is checked on the log itself: the topic's end offsets don't move.
"""

from __future__ import annotations

import uuid

import asyncpg
import msgspec
import pytest

from services.command import store
from services.command.resources import IDS, POOL, SETTINGS
from shared.auth import issue_token
from shared.events import (
    AudienceCreated,
    AudienceDeleted,
    AudienceMemberAdded,
    AudienceMemberRemoved,
    LikeRemoved,
    PostCreated,
    PostEdited,
    PostLiked,
    PostReposted,
    RepostRemoved,
)
from tests.integration import test_command_api as api
from tests.integration.test_command_api import Client, Log, call, new_name

pytestmark = pytest.mark.integration

# The command API tests' module-scoped fixtures: one app and one log reader for this module.
client = api.client
log = api.log


class User(msgspec.Struct, frozen=True):
    id: str
    name: str
    token: str


async def user(client: Client) -> User:
    """A user as registration would leave it in the command store, with a fresh token.

    Registration and login themselves are tested in test_command_api.py; here argon2 (most of
    a second per hash on a busy 2-core machine) would only slow every test down.
    """
    app = client.app
    assert app is not None
    user_id, name = app[IDS].next_id(), new_name()
    async with app[POOL].acquire() as conn:
        await store.insert_account(conn, user_id, name, "unused-hash")
    settings = app[SETTINGS]
    token, _ = issue_token(settings.token_secret, user_id, settings.token_ttl_s)
    return User(str(user_id), name, token)


async def refused(
    client: Client,
    log: Log,
    method: str,
    path: str,
    body: object,
    token: str,
    expected: tuple[int, str, str | None],
) -> None:
    before = await log.size()
    status, problem, _ = await call(client, method, path, body, token=token)
    assert (status, problem["code"], problem.get("field")) == expected, problem
    assert await log.size() == before  # nothing written (invariant 8)


async def post(client: Client, author: User, **body: object) -> str:
    status, answer, _ = await call(
        client, "POST", "/v1/posts", {"text": "hi", **body}, token=author.token
    )
    assert status == 202, answer
    return str(answer["post_id"])


async def block(db: asyncpg.Connection, blocker: User, blocked: User) -> None:
    # The block as the projector would record it (its read model is where this fact lives).
    await db.execute(
        "INSERT INTO blocks (blocker_id, blocked_id, active, version, last_block_version, since)"
        " VALUES ($1, $2, true, $3, $3, now())",
        int(blocker.id),
        int(blocked.id),
        uuid.uuid4(),
    )


# ---------------------------------------------------------------- posts


async def test_post_with_entities_media_reply_and_quote(client: Client, log: Log) -> None:
    alice, bob = await user(client), await user(client)
    root = await post(client, bob)
    media = [
        {"kind": "image", "url": "https://img.example/a.png", "alt_text": "a", "width": 10},
        {"kind": "gif", "url": "http://img.example/b.gif"},
    ]
    status, answer, _ = await call(
        client,
        "POST",
        "/v1/posts",
        {
            "text": f"@{bob.name.upper()} @nobody_here #Hello #hello https://x.org/p.",
            "visibility": "unlisted",
            "in_reply_to_id": root,
            "quote_of_id": root,
            "media": media,
        },
        token=alice.token,
    )
    assert status == 202, answer
    event, _ = await log.at(answer["position"])
    assert isinstance(event, PostCreated)
    data = event.data
    assert (data.post_id, data.author_id, data.visibility) == (
        int(answer["post_id"]),
        int(alice.id),
        "unlisted",
    )
    assert (data.in_reply_to_id, data.in_reply_to_author_id, data.quote_of_id) == (
        int(root),
        int(bob.id),
        int(root),
    )
    assert [(m.user_id, m.username) for m in data.mentions] == [(int(bob.id), bob.name)]
    assert data.hashtags == ("hello",)
    assert data.links == ("https://x.org/p",)
    assert [m.url for m in data.media] == [media[0]["url"], media[1]["url"]]


async def test_bad_post_input_names_the_field_and_writes_nothing(client: Client, log: Log) -> None:
    alice = await user(client)
    photo = {"kind": "image", "url": "https://img.example/a.png"}
    cases: list[tuple[dict[str, object], tuple[int, str, str | None]]] = [
        ({"media": [photo] * 5}, (422, "invalid_field", "media")),
        (
            {"media": [photo, photo, {**photo, "url": "ftp://x.org/a"}]},
            (422, "invalid_field", "media[2].url"),
        ),
        (
            {"media": [{**photo, "url": "javascript:alert(1)"}]},
            (422, "invalid_field", "media[0].url"),
        ),
        ({"media": [{**photo, "kind": "pdf"}]}, (422, "invalid_field", "media[0].kind")),
        (
            {"media": [{**photo, "alt_text": "a" * 1501}]},
            (422, "invalid_field", "media[0].alt_text"),
        ),
        ({"media": [{**photo, "owner": "1"}]}, (422, "unknown_field", "media[0].owner")),
        ({"visibility": "friends"}, (422, "invalid_field", "visibility")),
        ({"author_id": alice.id}, (422, "unknown_field", "author_id")),
        ({"user_id": alice.id}, (422, "unknown_field", "user_id")),
        ({"in_reply_to_id": "abc"}, (422, "invalid_id", "in_reply_to_id")),
        ({"in_reply_to_id": "999999999"}, (422, "not_found", "in_reply_to_id")),
        ({"quote_of_id": "999999999"}, (422, "not_found", "quote_of_id")),
        ({"visibility": "audience"}, (422, "invalid_field", "audience_id")),
        ({"visibility": "audience", "audience_id": "999999"}, (422, "not_found", "audience_id")),
        ({"audience_id": "999999"}, (422, "invalid_field", "audience_id")),
    ]
    for extra, expected in cases:
        await refused(
            client, log, "POST", "/v1/posts", {"text": "hi", **extra}, alice.token, expected
        )


async def test_audience_posts_and_invisible_replies(
    client: Client, log: Log, db: asyncpg.Connection
) -> None:
    alice, bob, carol = await user(client), await user(client), await user(client)
    status, created, _ = await call(
        client, "POST", "/v1/audiences", {"name": "close friends"}, token=bob.token
    )
    assert status == 201, created
    event, _ = await log.at(created["position"])
    assert isinstance(event, AudienceCreated) and event.data.owner_id == int(bob.id)
    audience = created["audience_id"]

    # Posting to someone else's audience.
    await refused(
        client,
        log,
        "POST",
        "/v1/posts",
        {"text": "x", "visibility": "audience", "audience_id": audience},
        alice.token,
        (422, "not_found", "audience_id"),
    )
    secret = await post(client, bob, visibility="audience", audience_id=audience)
    # Alice is not a member: replying, quoting, liking, reposting all fail as if it didn't exist.
    for field in ("in_reply_to_id", "quote_of_id"):
        await refused(
            client,
            log,
            "POST",
            "/v1/posts",
            {"text": "x", field: secret},
            alice.token,
            (422, "not_found", field),
        )
    for what in ("like", "repost"):
        await refused(
            client,
            log,
            "PUT",
            f"/v1/posts/{secret}/{what}",
            None,
            alice.token,
            (404, "not_found", None),
        )

    status, body, _ = await call(
        client, "PUT", f"/v1/audiences/{audience}/members/{alice.id}", token=bob.token
    )
    assert status == 202, body
    event, _ = await log.at(body["position"])
    assert isinstance(event, AudienceMemberAdded) and event.data.member_id == int(alice.id)
    # A member may reply (and may like), but audience posts are never repostable by others.
    reply = await post(client, alice, in_reply_to_id=secret)
    assert reply
    status, body, _ = await call(client, "PUT", f"/v1/posts/{secret}/like", token=alice.token)
    assert status == 202, body
    await refused(
        client,
        log,
        "PUT",
        f"/v1/posts/{secret}/repost",
        None,
        alice.token,
        (422, "not_repostable", "post_id"),
    )

    # Only the owner manages the audience; unknown members and non-members are 404.
    for method, path in [
        ("PUT", f"/v1/audiences/{audience}/members/{carol.id}"),
        ("DELETE", f"/v1/audiences/{audience}/members/{alice.id}"),
        ("DELETE", f"/v1/audiences/{audience}"),
    ]:
        await refused(client, log, method, path, None, carol.token, (404, "not_found", None))
    await refused(
        client,
        log,
        "PUT",
        f"/v1/audiences/{audience}/members/999999",
        None,
        bob.token,
        (404, "not_found", None),
    )
    await refused(
        client,
        log,
        "DELETE",
        f"/v1/audiences/{audience}/members/{carol.id}",
        None,
        bob.token,
        (404, "not_found", None),
    )
    await refused(
        client,
        log,
        "POST",
        "/v1/audiences",
        {"name": "x", "owner_id": bob.id},
        bob.token,
        (422, "unknown_field", "owner_id"),
    )
    status, body, _ = await call(
        client, "DELETE", f"/v1/audiences/{audience}/members/{alice.id}", token=bob.token
    )
    assert status == 202, body
    assert isinstance((await log.at(body["position"]))[0], AudienceMemberRemoved)
    status, body, _ = await call(client, "DELETE", f"/v1/audiences/{audience}", token=bob.token)
    assert status == 202, body
    assert isinstance((await log.at(body["position"]))[0], AudienceDeleted)
    await refused(
        client,
        log,
        "POST",
        "/v1/posts",
        {"text": "x", "visibility": "audience", "audience_id": audience},
        bob.token,
        (422, "not_found", "audience_id"),
    )

    # A block hides the blocker's posts: no reply, no like, no repost.
    public = await post(client, carol)
    await block(db, carol, alice)
    await refused(
        client,
        log,
        "POST",
        "/v1/posts",
        {"text": "x", "in_reply_to_id": public},
        alice.token,
        (422, "not_found", "in_reply_to_id"),
    )
    for what in ("like", "repost"):
        await refused(
            client,
            log,
            "PUT",
            f"/v1/posts/{public}/{what}",
            None,
            alice.token,
            (404, "not_found", None),
        )


async def test_mentions_skip_blocked_pairs(
    client: Client, log: Log, db: asyncpg.Connection
) -> None:
    alice, bob, carol = await user(client), await user(client), await user(client)
    await block(db, carol, alice)
    status, answer, _ = await call(
        client,
        "POST",
        "/v1/posts",
        {"text": f"hi @{bob.name} and @{carol.name}", "visibility": "direct"},
        token=alice.token,
    )
    assert status == 202, answer
    event, _ = await log.at(answer["position"])
    assert isinstance(event, PostCreated)
    assert [m.user_id for m in event.data.mentions] == [int(bob.id)]


# ---------------------------------------------------------------- edits


async def test_edit_by_author_only(client: Client, log: Log) -> None:
    alice, bob = await user(client), await user(client)
    photo = {"kind": "video", "url": "https://v.example/1.mp4"}
    mine = await post(client, alice, media=[photo])
    status, body, _ = await call(
        client, "PATCH", f"/v1/posts/{mine}", {"text": f"now #new @{bob.name}"}, token=alice.token
    )
    assert status == 202, body
    event, _ = await log.at(body["position"])
    assert isinstance(event, PostEdited)
    assert (event.data.post_id, event.data.text, event.data.hashtags) == (
        int(mine),
        f"now #new @{bob.name}",
        ("new",),
    )
    assert [m.user_id for m in event.data.mentions] == [int(bob.id)]
    assert [m.url for m in event.data.media] == [photo["url"]]  # absent media: kept

    await refused(
        client,
        log,
        "PATCH",
        f"/v1/posts/{mine}",
        {"text": "mine now"},
        bob.token,
        (404, "not_found", None),
    )
    await refused(
        client,
        log,
        "PATCH",
        f"/v1/posts/{mine}",
        {"text": "x", "visibility": "direct"},
        alice.token,
        (422, "unknown_field", "visibility"),
    )
    await refused(
        client,
        log,
        "PATCH",
        f"/v1/posts/{mine}",
        {"text": "x", "media": [photo] * 5},
        alice.token,
        (422, "invalid_field", "media"),
    )
    await refused(
        client,
        log,
        "PATCH",
        "/v1/posts/999999",
        {"text": "x"},
        alice.token,
        (404, "not_found", None),
    )


# ---------------------------------------------------------------- reposts and likes


async def test_repost_once_then_remove(client: Client, log: Log) -> None:
    alice, bob = await user(client), await user(client)
    target = await post(client, bob)
    status, first, _ = await call(client, "PUT", f"/v1/posts/{target}/repost", token=alice.token)
    assert status == 202, first
    event, _ = await log.at(first["position"])
    assert isinstance(event, PostReposted)
    assert (event.data.repost_id, event.data.post_id, event.data.author_id) == (
        int(first["repost_id"]),
        int(target),
        int(bob.id),
    )

    before = await log.size()
    status, again, _ = await call(client, "PUT", f"/v1/posts/{target}/repost", token=alice.token)
    assert (status, again) == (200, first)  # the first answer, and no second event
    assert await log.size() == before

    status, body, _ = await call(client, "DELETE", f"/v1/posts/{target}/repost", token=alice.token)
    assert status == 202, body
    event, _ = await log.at(body["position"])
    assert isinstance(event, RepostRemoved) and event.data.repost_id == int(first["repost_id"])
    await refused(
        client,
        log,
        "DELETE",
        f"/v1/posts/{target}/repost",
        None,
        alice.token,
        (404, "not_found", None),
    )

    followers_only = await post(client, bob, visibility="followers")
    await refused(
        client,
        log,
        "PUT",
        f"/v1/posts/{followers_only}/repost",
        None,
        alice.token,
        (404, "not_found", None),
    )
    own = await post(client, alice, visibility="followers")
    status, body, _ = await call(client, "PUT", f"/v1/posts/{own}/repost", token=alice.token)
    assert status == 202, body


async def test_like_once_then_remove(client: Client, log: Log) -> None:
    alice, bob = await user(client), await user(client)
    target = await post(client, bob)
    status, first, _ = await call(client, "PUT", f"/v1/posts/{target}/like", token=alice.token)
    assert status == 202, first
    event, _ = await log.at(first["position"])
    assert isinstance(event, PostLiked)
    assert (event.data.post_id, event.data.author_id, event.data.liker_id) == (
        int(target),
        int(bob.id),
        int(alice.id),
    )
    before = await log.size()
    status, again, _ = await call(client, "PUT", f"/v1/posts/{target}/like", token=alice.token)
    assert (status, again) == (200, first)
    assert await log.size() == before

    status, body, _ = await call(client, "DELETE", f"/v1/posts/{target}/like", token=alice.token)
    assert status == 202, body
    assert isinstance((await log.at(body["position"]))[0], LikeRemoved)
    await refused(
        client,
        log,
        "DELETE",
        f"/v1/posts/{target}/like",
        None,
        alice.token,
        (404, "not_found", None),
    )
    await refused(
        client, log, "PUT", "/v1/posts/999999/like", None, alice.token, (404, "not_found", None)
    )
    await refused(
        client,
        log,
        "PUT",
        "/v1/posts/abc/like",
        None,
        alice.token,
        (422, "invalid_id", "post_id"),
    )
