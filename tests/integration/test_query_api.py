"""The query API against real PostgreSQL: read-model rows are inserted with SQL, as the projector
would leave them, and read back through HTTP."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import asyncpg
import msgspec
import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer
from yarl import URL

from services.query.app import create_app
from services.query.handlers import POOL
from shared.auth import issue_token
from shared.ids import SnowflakeGenerator, snowflake_time, uuid7
from shared.settings import Settings
from tests.infra import unique_name

pytestmark = pytest.mark.integration

PROBLEM = "application/problem+json"
_ids = SnowflakeGenerator(worker_id=1021)


class Seed:
    """Writes read-model rows the way the projector leaves them."""

    def __init__(self, conn: asyncpg.Connection, secret: str) -> None:
        self.conn = conn
        self.secret = secret

    async def user(self, username: str | None = None, display_name: str = "") -> int:
        user_id = _ids.next_id()
        await self.conn.execute(
            "INSERT INTO users (user_id, username, display_name, created_at)"
            " VALUES ($1, $2, $3, $4)",
            user_id,
            username or f"u{uuid.uuid4().hex[:12]}",
            display_name,
            snowflake_time(user_id),
        )
        return user_id

    async def post(
        self,
        author_id: int,
        text: str = "hello",
        readers: tuple[int, ...] = (),
        *,
        visibility: str = "public",
        audience_id: int | None = None,
        mentions: tuple[int, ...] = (),
        hashtags: tuple[str, ...] = (),
        in_reply_to_id: int | None = None,
        conversation_id: int | None = None,
        post_id: int | None = None,
    ) -> int:
        """A post, fanned out to its author's and the given readers' home timelines."""
        post_id = post_id or _ids.next_id()
        names = [
            await self.conn.fetchval("SELECT username FROM users WHERE user_id = $1", m)
            for m in mentions
        ]
        await self.conn.execute(
            "INSERT INTO posts (post_id, author_id, text, created_at, visibility, audience_id,"
            " mentions, mention_names, hashtags, in_reply_to_id, conversation_id)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            post_id,
            author_id,
            text,
            snowflake_time(post_id),
            visibility,
            audience_id,
            list(mentions),
            names,
            list(hashtags),
            in_reply_to_id,
            conversation_id or post_id,
        )
        if visibility == "public":
            await self.conn.executemany(
                "INSERT INTO post_tags (tag, post_id) VALUES ($1, $2)",
                [(tag, post_id) for tag in hashtags],
            )
        await self.conn.executemany(
            "INSERT INTO home_timeline (user_id, post_id, author_id) VALUES ($1, $2, $3)",
            [(reader, post_id, author_id) for reader in (author_id, *readers)],
        )
        return post_id

    async def repost(self, reposter: int, post_id: int, readers: tuple[int, ...] = ()) -> int:
        repost_id = _ids.next_id()
        await self.conn.execute(
            "INSERT INTO reposts (repost_id, post_id, reposter_id, created_at)"
            " VALUES ($1, $2, $3, now())",
            repost_id,
            post_id,
            reposter,
        )
        await self.conn.executemany(
            "INSERT INTO home_timeline (user_id, post_id, author_id, reposted_post_id)"
            " VALUES ($1, $2, $3, $4)",
            [(reader, repost_id, reposter, post_id) for reader in (reposter, *readers)],
        )
        return repost_id

    async def mute(self, muter: int, muted: int, expires_at: datetime | None = None) -> None:
        await self.conn.execute(
            "INSERT INTO mutes (muter_id, muted_id, active, expires_at, version)"
            " VALUES ($1, $2, true, $3, $4)",
            muter,
            muted,
            expires_at,
            uuid7(),
        )

    async def audience(self, owner: int, name: str, members: tuple[int, ...] = ()) -> int:
        audience_id = _ids.next_id()
        await self.conn.execute(
            "INSERT INTO audiences (audience_id, owner_id, name, created_at)"
            " VALUES ($1, $2, $3, now())",
            audience_id,
            owner,
            name,
        )
        await self.conn.executemany(
            "INSERT INTO audience_members (audience_id, member_id) VALUES ($1, $2)",
            [(audience_id, m) for m in members],
        )
        return audience_id

    async def notification(
        self, user: int, kind: str, actor: int, post_id: int | None = None
    ) -> uuid.UUID:
        event_id = uuid7()
        await self.conn.execute(
            "INSERT INTO notifications (user_id, event_id, kind, actor_id, post_id, created_at)"
            " VALUES ($1, $2, $3, $4, $5, now())",
            user,
            event_id,
            kind,
            actor,
            post_id,
        )
        return event_id

    async def like(self, user: int, post_id: int) -> None:
        await self.conn.execute(
            "INSERT INTO likes (post_id, user_id, created_at) VALUES ($1, $2, now())",
            post_id,
            user,
        )

    async def delete(self, post_id: int) -> None:
        """A delete as the projector applies it: the post leaves everything, a tombstone stays."""
        author = await self.conn.fetchval(
            "DELETE FROM posts WHERE post_id = $1 RETURNING author_id", post_id
        )
        await self.conn.execute(
            "DELETE FROM home_timeline WHERE post_id = $1 OR reposted_post_id = $1", post_id
        )
        await self.conn.execute(
            "INSERT INTO post_tombstones (post_id, author_id, deleted_at)"
            " VALUES ($1, $2, clock_timestamp())",
            post_id,
            author,
        )

    async def follow(self, follower: int, followee: int, active: bool = True) -> None:
        await self.conn.execute(
            "INSERT INTO follows (follower_id, followee_id, active, version, since)"
            " VALUES ($1, $2, $3, $4, now())",
            follower,
            followee,
            active,
            uuid7(),
        )

    async def block(self, blocker: int, blocked: int, active: bool = True) -> None:
        version = uuid7()
        await self.conn.execute(
            "INSERT INTO blocks (blocker_id, blocked_id, active, version, last_block_version,"
            " since) VALUES ($1, $2, $3, $4, $4, now())",
            blocker,
            blocked,
            active,
            version,
        )

    def auth(self, user_id: int) -> dict[str, str]:
        return {"Authorization": f"Bearer {issue_token(self.secret, user_id, 3600)[0]}"}


@pytest.fixture(scope="module")
def query_settings(settings: Settings) -> Settings:
    # A topic of our own: other suites in this session may write projector_offsets rows.
    return msgspec.structs.replace(settings, topic=unique_name("query_events"))


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def client(query_settings: Settings) -> AsyncIterator[TestClient[Any, Any]]:
    async with TestClient(TestServer(create_app(query_settings))) as c:
        yield c


@pytest_asyncio.fixture
async def seed(db: asyncpg.Connection, query_settings: Settings) -> Seed:
    return Seed(db, query_settings.token_secret)


def links(response: Any) -> dict[str, URL]:
    return {
        rel: URL(url)
        for url, rel in re.findall(r'<([^>]+)>; rel="(\w+)"', response.headers.get("Link", ""))
    }


def ids(body: list[dict[str, Any]]) -> list[int]:
    return [int(item["post_id"]) for item in body]


async def assert_problem(response: Any, status: int, code: str, field: str | None = None) -> None:
    assert response.status == status, await response.text()
    assert response.content_type == PROBLEM
    body = await response.json(content_type=PROBLEM)
    assert body["code"] == code
    assert body["status"] == status
    assert body.get("field") == field


# ------------------------------------------------------------------ home timeline


async def test_home_timeline_newest_first_with_pages_and_links(
    client: TestClient[Any, Any], seed: Seed
) -> None:
    viewer = await seed.user()
    username = f"a{uuid.uuid4().hex[:12]}"
    author = await seed.user(username, display_name="The Author")
    await seed.follow(viewer, author)
    theirs = [await seed.post(author, f"post {i}", readers=(viewer,)) for i in range(5)]
    mine = await seed.post(viewer, "my own")
    newest_first = [mine, *reversed(theirs)]

    first = await client.get("/v1/timelines/home?limit=4", headers=seed.auth(viewer))
    assert first.status == 200
    body = await first.json()
    assert ids(body) == newest_first[:4]
    item = body[1]
    assert item == {
        "post_id": str(theirs[-1]),
        "author": {
            "user_id": str(author),
            "username": username,
            "display_name": "The Author",
            "avatar_url": None,
        },
        "text": "post 4",
        "created_at": item["created_at"],
        "edited_at": None,
        "visibility": "public",
        "in_reply_to_id": None,
        "conversation_id": str(theirs[-1]),
        "quote_of_id": None,
        "mentions": [],
        "hashtags": [],
        "links": [],
        "media": [],
        "replies_count": 0,
        "reposts_count": 0,
        "likes_count": 0,
    }
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", item["created_at"])

    rel = links(first)
    assert rel["next"].query == {"limit": "4", "max_id": str(newest_first[3])}
    assert rel["prev"].query == {"limit": "4", "since_id": str(mine)}
    assert rel["next"].is_absolute() and rel["next"].path == "/v1/timelines/home"

    second = await client.get(rel["next"].path_qs, headers=seed.auth(viewer))
    assert ids(await second.json()) == newest_first[4:]
    assert set(links(second)) == {"prev"}  # a short page: nothing older is left

    newer = await client.get(f"/v1/timelines/home?since_id={theirs[2]}", headers=seed.auth(viewer))
    assert ids(await newer.json()) == [mine, theirs[4], theirs[3]]

    window = await client.get(
        f"/v1/timelines/home?max_id={theirs[4]}&since_id={theirs[0]}", headers=seed.auth(viewer)
    )
    assert ids(await window.json()) == [theirs[3], theirs[2], theirs[1]]


async def test_home_timeline_hides_blocked_authors_at_read_time(
    client: TestClient[Any, Any], seed: Seed
) -> None:
    viewer = await seed.user()
    blocked_by_viewer, blocking_viewer, unblocked, friend = [await seed.user() for _ in range(4)]
    await seed.block(viewer, blocked_by_viewer)
    await seed.block(blocking_viewer, viewer)
    await seed.block(viewer, unblocked, active=False)
    # The projector has not (yet) removed these rows; the read must hide them anyway.
    hidden = [await seed.post(a, readers=(viewer,)) for a in (blocked_by_viewer, blocking_viewer)]
    shown = [await seed.post(a, readers=(viewer,)) for a in (unblocked, friend)]
    hidden.append(await seed.post(blocked_by_viewer, readers=(viewer,)))

    response = await client.get("/v1/timelines/home", headers=seed.auth(viewer))
    assert ids(await response.json()) == list(reversed(shown))

    # Pages stay full although hidden rows sit between the visible ones.
    one = await client.get("/v1/timelines/home?limit=1", headers=seed.auth(viewer))
    assert ids(await one.json()) == [shown[1]]
    assert "next" in links(one)
    two = await client.get(links(one)["next"].path_qs, headers=seed.auth(viewer))
    assert ids(await two.json()) == [shown[0]]


async def test_home_timeline_needs_a_valid_token(client: TestClient[Any, Any]) -> None:
    await assert_problem(await client.get("/v1/timelines/home"), 401, "unauthorized")
    bad = {"Authorization": "Bearer 1.2.3.4"}
    await assert_problem(await client.get("/v1/timelines/home", headers=bad), 401, "invalid_token")


async def test_limit_is_clamped_and_validated(client: TestClient[Any, Any], seed: Seed) -> None:
    author = await seed.user()
    posts = [await seed.post(author) for _ in range(42)]
    newest_first = list(reversed(posts))

    default = await client.get(f"/v1/users/{author}/posts")
    assert ids(await default.json()) == newest_first[:20]
    clamped = await client.get(f"/v1/users/{author}/posts?limit=1000")
    assert ids(await clamped.json()) == newest_first[:40]
    assert links(clamped)["next"].query["limit"] == "40"
    home = await client.get("/v1/timelines/home?limit=41", headers=seed.auth(author))
    assert len(await home.json()) == 40

    for bad in ("0", "-2", "many", "2.5"):
        await assert_problem(
            await client.get(f"/v1/users/{author}/posts?limit={bad}"), 422, "invalid_field", "limit"
        )
    await assert_problem(
        await client.get("/v1/timelines/home?limit=0", headers=seed.auth(author)),
        422,
        "invalid_field",
        "limit",
    )
    await assert_problem(
        await client.get(f"/v1/users/{author}/posts?max_id=x"), 422, "invalid_id", "max_id"
    )
    await assert_problem(
        await client.get("/v1/timelines/home?since_id=-1", headers=seed.auth(author)),
        422,
        "invalid_id",
        "since_id",
    )


# ------------------------------------------------------------------ one author's posts


async def test_user_posts_newest_first_and_paged(client: TestClient[Any, Any], seed: Seed) -> None:
    author = await seed.user(display_name="Ann")
    other = await seed.user()
    posts = [await seed.post(author, f"p{i}") for i in range(3)]
    await seed.post(other)

    first = await client.get(f"/v1/users/{author}/posts?limit=2")
    body = await first.json()
    assert ids(body) == [posts[2], posts[1]]
    assert body[0]["author"]["user_id"] == str(author)
    assert body[0]["author"]["display_name"] == "Ann"
    assert body[0]["text"] == "p2"
    second = await client.get(links(first)["next"].path_qs)
    assert ids(await second.json()) == [posts[0]]
    assert "next" not in links(second)

    empty = await client.get(f"/v1/users/{other}/posts?max_id=1")
    assert await empty.json() == []
    assert "Link" not in empty.headers


async def test_user_posts_is_404_for_unknown_or_blocked(
    client: TestClient[Any, Any], seed: Seed
) -> None:
    author = await seed.user()
    blocked_by_author, blocking_author, stranger = [await seed.user() for _ in range(3)]
    await seed.block(author, blocked_by_author)
    await seed.block(blocking_author, author)
    post = await seed.post(author)

    url = f"/v1/users/{author}/posts"
    for viewer in (blocked_by_author, blocking_author):
        await assert_problem(await client.get(url, headers=seed.auth(viewer)), 404, "not_found")
    for headers in ({}, seed.auth(stranger), seed.auth(author)):
        response = await client.get(url, headers=headers)
        assert ids(await response.json()) == [post]

    await assert_problem(await client.get(f"/v1/users/{_ids.next_id()}/posts"), 404, "not_found")
    await assert_problem(await client.get("/v1/users/abc/posts"), 422, "invalid_id", "user_id")


# ------------------------------------------------------------------ one post


async def test_single_post_and_its_404s(client: TestClient[Any, Any], seed: Seed) -> None:
    author = await seed.user(username=f"Writer{uuid.uuid4().hex[:8]}", display_name="W")
    blocked_by_author, blocking_author, stranger = [await seed.user() for _ in range(3)]
    await seed.block(author, blocked_by_author)
    await seed.block(blocking_author, author)
    post = await seed.post(author, "the text")

    for headers in ({}, seed.auth(stranger), seed.auth(author)):
        response = await client.get(f"/v1/posts/{post}", headers=headers)
        assert response.status == 200
        body = await response.json()
        assert body["post_id"] == str(post)
        assert body["text"] == "the text"
        assert body["author"]["user_id"] == str(author)

    for viewer in (blocked_by_author, blocking_author):
        hidden = await client.get(f"/v1/posts/{post}", headers=seed.auth(viewer))
        await assert_problem(hidden, 404, "not_found")
        missing = await client.get(f"/v1/posts/{_ids.next_id()}", headers=seed.auth(viewer))
        # A hidden post and a missing one are indistinguishable.
        assert await hidden.read() == await missing.read()

    await assert_problem(await client.get("/v1/posts/12x"), 422, "invalid_id", "post_id")
    await assert_problem(await client.get(f"/v1/posts/{1 << 63}"), 422, "invalid_id", "post_id")


# ------------------------------------------------------------------ profiles


async def test_profiles_with_counts(client: TestClient[Any, Any], seed: Seed) -> None:
    name = f"Mixed{uuid.uuid4().hex[:8]}Case"
    user = await seed.user(username=name, display_name="Mixed")
    a, b, c = [await seed.user() for _ in range(3)]
    await seed.follow(a, user)
    await seed.follow(b, user)
    await seed.follow(c, user, active=False)
    await seed.follow(user, a)
    await seed.follow(user, c, active=False)
    for _ in range(3):
        await seed.post(user)

    expected = {
        "user_id": str(user),
        "username": name,
        "display_name": "Mixed",
        "bio": "",
        "avatar_url": None,
        "locked": False,
        "followers_count": 2,
        "following_count": 1,
        "posts_count": 3,
    }
    by_id = await client.get(f"/v1/users/{user}")
    assert by_id.status == 200
    body = await by_id.json()
    assert body.pop("created_at").endswith("Z")
    assert body == expected
    for spelled in (name, name.lower(), name.upper()):
        by_name = await client.get(f"/v1/users/by-username/{spelled}")
        assert by_name.status == 200
        assert await by_name.json() == await (await client.get(f"/v1/users/{user}")).json()

    await assert_problem(await client.get(f"/v1/users/{_ids.next_id()}"), 404, "not_found")
    await assert_problem(await client.get("/v1/users/by-username/nobody-here"), 404, "not_found")
    await assert_problem(await client.get("/v1/users/0"), 422, "invalid_id", "user_id")


# ------------------------------------------------------------------ read-your-writes


async def test_consistency_position_waits_for_the_projector(
    client: TestClient[Any, Any], seed: Seed, db: asyncpg.Connection, query_settings: Settings
) -> None:
    author = await seed.user()
    post = await seed.post(author)
    await db.execute(
        "INSERT INTO projector_offsets (topic, partition, next_offset) VALUES ($1, 3, 5)",
        query_settings.topic,
    )
    url = f"/v1/posts/{post}"

    passed = await client.get(url, headers={"X-Consistency-Position": "3:4"})
    assert passed.status == 200

    waiting = asyncio.create_task(client.get(url, headers={"X-Consistency-Position": "3:7"}))
    await asyncio.sleep(0.3)
    assert not waiting.done()
    started = time.monotonic()
    await db.execute(
        "UPDATE projector_offsets SET next_offset = 8 WHERE topic = $1 AND partition = 3",
        query_settings.topic,
    )
    response = await asyncio.wait_for(waiting, 5)
    assert response.status == 200
    assert ids([await response.json()]) == [post]
    assert time.monotonic() - started < 0.5  # polling back-off is capped at 50 ms

    # Every GET route honours it, the signed-in ones included.
    home = await client.get(
        "/v1/timelines/home", headers={"X-Consistency-Position": "3:7", **seed.auth(author)}
    )
    assert ids(await home.json()) == [post]


async def test_consistency_timeout_is_504_within_the_bound(
    query_settings: Settings, seed: Seed, db: asyncpg.Connection
) -> None:
    short = msgspec.structs.replace(query_settings, consistency_timeout_s=0.5)
    await db.execute(
        "INSERT INTO projector_offsets (topic, partition, next_offset) VALUES ($1, 4, 10)",
        short.topic,
    )
    async with TestClient(TestServer(create_app(short))) as c:
        for position in ("4:10", "5:0"):  # not passed yet; a partition never seen
            started = time.monotonic()
            response = await c.get(
                f"/v1/users/{await seed.user()}", headers={"X-Consistency-Position": position}
            )
            elapsed = time.monotonic() - started
            await assert_problem(response, 504, "consistency_timeout", "X-Consistency-Position")
            assert "position" in (await response.json(content_type=PROBLEM))["detail"]
            assert 0.45 <= elapsed < 1.5


@pytest.mark.parametrize("header", ["", "3", "a:1", "1:-1", "1:2:3", "1:2x"])
async def test_malformed_position_is_400(client: TestClient[Any, Any], header: str) -> None:
    response = await client.get("/v1/users/1", headers={"X-Consistency-Position": header})
    await assert_problem(response, 400, "invalid_position", "X-Consistency-Position")


# ------------------------------------------------------------------ service endpoints


async def test_health_readiness_metrics_and_unknown_routes(client: TestClient[Any, Any]) -> None:
    assert (await client.get("/healthz")).status == 200
    ready = await client.get("/readyz")
    assert ready.status == 200
    await assert_problem(await client.get("/v1/nothing-here"), 404, "not_found")
    await assert_problem(await client.post("/v1/timelines/home"), 405, "method_not_allowed")
    metrics = await client.get("/metrics")
    assert metrics.status == 200
    text = await metrics.text()
    assert 'microblog_query_request_seconds_count{route="/readyz",status="200"}' in text


async def test_readyz_is_503_without_postgres(query_settings: Settings) -> None:
    app = create_app(query_settings)
    async with TestClient(TestServer(app)) as c:
        app[POOL].terminate()  # PostgreSQL "gone" as far as this app can tell
        await assert_problem(await c.get("/readyz"), 503, "not_ready")
