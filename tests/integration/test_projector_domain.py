"""Every projection rule of schemas/semantics.md on real PostgreSQL, and convergence of the
read model under cross-partition reordering (invariant 4).

Records are fed to `Projector.apply_batch` directly (one private topic name per test, partition
0), which is the same path the consume loop takes; the Kafka round trip is covered by
test_projector.py.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import asyncpg
import msgspec
import pytest
import pytest_asyncio
from aiokafka.structs import ConsumerRecord

from services.projector import runner, trimmer
from services.projector.runner import Projector
from services.query import stream_reads
from shared.db import create_pool
from shared.events import (
    AudienceCreated,
    AudienceData,
    AudienceDeleted,
    AudienceMemberAdded,
    AudienceMemberData,
    AudienceMemberRemoved,
    BlockCreated,
    BlockData,
    Event,
    FollowCreated,
    FollowData,
    FollowRemoved,
    FollowRequestApproved,
    FollowRequested,
    FollowRequestRejected,
    LikeData,
    LikeRemoved,
    Media,
    Mention,
    MuteCreated,
    MuteData,
    PostCreated,
    PostCreatedData,
    PostDeleted,
    PostDeletedData,
    PostEdited,
    PostEditedData,
    PostLiked,
    PostReposted,
    ProfileUpdated,
    ProfileUpdatedData,
    RepostData,
    RepostRemoved,
    UserRegistered,
    UserRegisteredData,
    new_event,
)
from shared.ids import SnowflakeGenerator
from shared.settings import Settings
from tests.infra import unique_name
from tests.records import consumer_record

pytestmark = pytest.mark.integration

ids = SnowflakeGenerator(worker_id=902)


@pytest_asyncio.fixture
async def pool(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    p = await create_pool(settings.database_url, min_size=1, max_size=4)
    try:
        yield p
    finally:
        await p.close()


def record(topic: str, offset: int, value: bytes) -> ConsumerRecord[bytes, bytes]:
    return consumer_record(topic, 0, offset, value)


class Feeder:
    """A projector owning partition 0 of a private topic; events go in as batches."""

    def __init__(self, settings: Settings, pool: asyncpg.Pool, **overrides: Any) -> None:
        self.settings = msgspec.structs.replace(settings, topic=unique_name("dom"), **overrides)
        self.projector = Projector(self.settings, pool)
        self.offset = 0

    async def start(self) -> Feeder:
        await self.projector.claim([0])
        return self

    async def batch(self, *events: Event | bytes) -> None:
        recs = []
        for e in events:
            value = e if isinstance(e, bytes) else msgspec.json.encode(e)
            recs.append(record(self.settings.topic, self.offset, value))
            self.offset += 1
        await self.projector.apply_batch(recs)

    async def each(self, *events: Event) -> None:
        for e in events:
            await self.batch(e)


async def feeder(settings: Settings, pool: asyncpg.Pool, **overrides: Any) -> Feeder:
    return await Feeder(settings, pool, **overrides).start()


# ---------------------------------------------------------------- event builders


def user(uid: int, locked: bool = False) -> UserRegistered:
    return new_event(
        UserRegistered,
        actor_id=uid,
        data=UserRegisteredData(user_id=uid, username=unique_name("u")[:30]),
    )


def post(author: int, text: str = "hi", **fields: Any) -> PostCreated:
    data = PostCreatedData(post_id=ids.next_id(), author_id=author, text=text, **fields)
    return new_event(PostCreated, actor_id=author, data=data)


def reply(author: int, parent: PostCreated, **fields: Any) -> PostCreated:
    return post(
        author,
        "re",
        in_reply_to_id=parent.data.post_id,
        in_reply_to_author_id=parent.data.author_id,
        **fields,
    )


def mention(uid: int) -> Mention:
    return Mention(user_id=uid, username=f"u{uid % 1000}")


def follow(a: int, b: int, kind: type[Event] = FollowCreated) -> Event:
    return new_event(kind, actor_id=a, data=FollowData(follower_id=a, followee_id=b))  # type: ignore[type-var]


def block(a: int, b: int) -> BlockCreated:
    return new_event(BlockCreated, actor_id=a, data=BlockData(blocker_id=a, blocked_id=b))


def repost(p: PostCreated, by: int, kind: type[Event] = PostReposted, rid: int = 0) -> Any:
    data = RepostData(
        repost_id=rid or ids.next_id(),
        post_id=p.data.post_id,
        author_id=p.data.author_id,
        reposter_id=by,
    )
    return new_event(kind, actor_id=by, data=data)  # type: ignore[type-var]


def like(p: PostCreated, by: int, kind: type[Event] = PostLiked) -> Any:
    data = LikeData(post_id=p.data.post_id, author_id=p.data.author_id, liker_id=by)
    return new_event(kind, actor_id=by, data=data)  # type: ignore[type-var]


def n() -> int:
    return ids.next_id()


# ---------------------------------------------------------------- read helpers


async def home(pool: asyncpg.Pool, uid: int) -> list[int]:
    rows = await pool.fetch(
        "SELECT post_id FROM home_timeline WHERE user_id=$1 ORDER BY post_id", uid
    )
    return [r["post_id"] for r in rows]


async def readable(pool: asyncpg.Pool, uid: int) -> list[tuple[str, int]]:
    """The notifications the query service serves `uid`, oldest first. (The table may hold
    more: one kept while a block or mute stands, until an unblock or unmute settles it.)"""
    rows = await stream_reads.notifications(pool, uid, stream_reads.UUID_MAX, uuid.UUID(int=0), 50)
    return [(r["kind"], r["user_id"]) for r in reversed(rows)]


async def notes(pool: asyncpg.Pool, uid: int) -> list[tuple[str, int]]:
    rows = await pool.fetch(
        "SELECT kind, actor_id FROM notifications WHERE user_id=$1 ORDER BY event_id", uid
    )
    return [(r["kind"], r["actor_id"]) for r in rows]


async def the_post(pool: asyncpg.Pool, p: PostCreated) -> asyncpg.Record | None:
    return await pool.fetchrow("SELECT * FROM posts WHERE post_id=$1", p.data.post_id)


def pid(p: PostCreated) -> int:
    return p.data.post_id


# ---------------------------------------------------------------- rules


async def test_profile_update_changes_only_given_fields(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    f = await feeder(settings, pool)
    a = n()
    upd = ProfileUpdatedData(user_id=a, bio="hello", locked=True)
    await f.each(user(a), new_event(ProfileUpdated, actor_id=a, data=upd))
    await f.batch(
        new_event(
            ProfileUpdated,
            actor_id=a,
            data=ProfileUpdatedData(user_id=a, display_name="Al", avatar_url="https://x.io/a"),
        )
    )
    row = await pool.fetchrow("SELECT * FROM users WHERE user_id=$1", a)
    assert row is not None
    assert (row["display_name"], row["bio"], row["avatar_url"], row["locked"]) == (
        "Al",
        "hello",
        "https://x.io/a",
        True,
    )


async def test_fanout_follows_visibility(settings: Settings, pool: asyncpg.Pool) -> None:
    f = await feeder(settings, pool)
    author, fan, member, friend, stranger = n(), n(), n(), n(), n()
    aud = n()
    await f.each(
        follow(fan, author),
        new_event(
            AudienceCreated,
            actor_id=author,
            data=AudienceData(audience_id=aud, owner_id=author, name="close"),
        ),
        new_event(
            AudienceMemberAdded,
            actor_id=author,
            data=AudienceMemberData(audience_id=aud, owner_id=author, member_id=member),
        ),
    )
    pub = post(author, "#Hello world", hashtags=("hello",))
    unl = post(author, visibility="unlisted", hashtags=("hello",))
    fol = post(author, visibility="followers")
    au = post(author, visibility="audience", audience_id=aud)
    dm = post(author, visibility="direct", mentions=(mention(friend),))
    media = (Media(kind="image", url="https://img.example/1.png"),)
    await f.batch(pub, unl, fol, au, dm.__class__(**{**msgspec.structs.asdict(dm)}))
    assert await home(pool, author) == sorted(map(pid, (pub, unl, fol, au, dm)))
    assert await home(pool, fan) == sorted(map(pid, (pub, unl, fol)))
    assert await home(pool, member) == [pid(au)]
    assert await home(pool, friend) == [pid(dm)]
    assert await home(pool, stranger) == []
    tags = await pool.fetch("SELECT post_id FROM post_tags WHERE tag='hello'")
    assert [r["post_id"] for r in tags] == [pid(pub)]  # hashtag index: public posts only
    with_media = post(author, media=media)
    await f.batch(with_media)
    row = await the_post(pool, with_media)
    assert row is not None and msgspec.json.decode(row["media"])[0]["kind"] == "image"
    # A post never edited has no version rows: the query side serves it as its version 0.
    versions = await pool.fetchval(
        "SELECT count(*) FROM post_versions WHERE post_id=$1", pid(with_media)
    )
    assert versions == 0


async def test_replies_count_and_conversation_and_notifications(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    f = await feeder(settings, pool)
    a, b, c = n(), n(), n()
    root = post(a)
    r1 = reply(b, root, mentions=(mention(c), mention(a)))
    r2 = reply(c, r1)
    await f.batch(root, r1)
    await f.batch(r2)
    assert (await the_post(pool, root))["replies_count"] == 1  # type: ignore[index]
    assert (await the_post(pool, r2))["conversation_id"] == pid(root)  # type: ignore[index]
    assert await notes(pool, a) == [("reply", b)]  # reply wins over the mention
    assert await notes(pool, c) == [("mention", b)]
    assert await notes(pool, b) == [("reply", c)]
    await f.batch(
        new_event(PostDeleted, actor_id=c, data=PostDeletedData(post_id=pid(r2), author_id=c))
    )
    assert (await the_post(pool, r1))["replies_count"] == 0  # type: ignore[index]
    assert await notes(pool, b) == []


async def test_edit_keeps_history_and_retags(settings: Settings, pool: asyncpg.Pool) -> None:
    f = await feeder(settings, pool)
    a = n()
    p = post(a, "#one", hashtags=("one",))
    edit = PostEditedData(post_id=pid(p), author_id=a, text="#two", hashtags=("two",))
    e = new_event(PostEdited, actor_id=a, data=edit)
    await f.each(p, e, e)  # a redelivered edit appends nothing
    row = await the_post(pool, p)
    assert row is not None and row["text"] == "#two" and row["edited_at"] is not None
    versions = await pool.fetch(
        "SELECT version, text FROM post_versions WHERE post_id=$1 ORDER BY version", pid(p)
    )
    assert [(v["version"], v["text"]) for v in versions] == [(0, "#one"), (1, "#two")]
    v0 = await pool.fetchrow("SELECT * FROM post_versions WHERE post_id=$1 AND version=0", pid(p))
    assert v0 is not None and v0["created_at"] == row["created_at"]  # the original's time
    second = new_event(PostEdited, actor_id=a, data=msgspec.structs.replace(edit, text="#3"))
    await f.batch(second)
    versions = await pool.fetch(
        "SELECT version, text FROM post_versions WHERE post_id=$1 ORDER BY version", pid(p)
    )
    assert [(v["version"], v["text"]) for v in versions] == [(0, "#one"), (1, "#two"), (2, "#3")]
    tags = await pool.fetch("SELECT tag FROM post_tags WHERE post_id=$1", pid(p))
    assert [t["tag"] for t in tags] == ["two"]


async def test_repost_fanout_counts_and_removal(settings: Settings, pool: asyncpg.Pool) -> None:
    f = await feeder(settings, pool)
    author, x, y, fan_x, fan_both = n(), n(), n(), n(), n()
    await f.each(follow(fan_x, x), follow(fan_both, x), follow(fan_both, author), follow(fan_x, y))
    p = post(author)
    private = post(author, visibility="followers")
    await f.batch(p, private)
    rx, ry = repost(p, x), repost(p, y)
    await f.each(rx, ry, repost(private, x))
    row = await the_post(pool, p)
    assert row is not None and row["reposts_count"] == 2
    # fan_x follows both reposters: the earlier repost shows, once. fan_both already has it.
    assert await home(pool, fan_x) == [rx.data.repost_id]
    assert await home(pool, fan_both) == [pid(p), pid(private)]
    assert await home(pool, x) == [rx.data.repost_id]
    # The repost of the followers-only post notifies too (its author may view it), but
    # fans out nowhere.
    assert await notes(pool, author) == [
        ("follow", fan_both),
        ("repost", x),
        ("repost", y),
        ("repost", x),
    ]
    await f.batch(repost(p, x, RepostRemoved, rid=rx.data.repost_id))
    assert (await the_post(pool, p))["reposts_count"] == 1  # type: ignore[index]
    assert rx.data.repost_id not in await home(pool, fan_x)
    assert await notes(pool, author) == [("follow", fan_both), ("repost", y), ("repost", x)]


async def test_delete_reaches_everything(settings: Settings, pool: asyncpg.Pool) -> None:
    f = await feeder(settings, pool)
    author, x, fan_x = n(), n(), n()
    await f.each(follow(fan_x, x))
    p = post(author, hashtags=("gone",))
    await f.batch(p)
    rx = repost(p, x)
    await f.each(rx, like(p, x))
    assert await home(pool, fan_x) == [rx.data.repost_id]
    d = new_event(
        PostDeleted, actor_id=author, data=PostDeletedData(post_id=pid(p), author_id=author)
    )
    await f.batch(d)
    assert await home(pool, fan_x) == [] and await home(pool, author) == []
    assert await notes(pool, author) == []
    for table in ("posts", "post_tags", "reposts", "likes", "post_versions"):
        assert not await pool.fetchval(f"SELECT count(*) FROM {table} WHERE post_id=$1", pid(p))
    assert await pool.fetchval("SELECT count(*) FROM post_tombstones WHERE post_id=$1", pid(p))
    # Late likes and reposts of a deleted post (other partitions) change nothing.
    await f.each(like(p, fan_x), repost(p, fan_x))
    assert await home(pool, fan_x) == []
    assert not await pool.fetchval("SELECT count(*) FROM likes WHERE post_id=$1", pid(p))


async def test_like_counts_and_notifies_never_self(settings: Settings, pool: asyncpg.Pool) -> None:
    f = await feeder(settings, pool)
    a, b = n(), n()
    p = post(a)
    await f.batch(p)
    liked = like(p, b)
    await f.each(liked, liked, like(p, a))  # a redelivered like counts once
    assert (await the_post(pool, p))["likes_count"] == 2  # type: ignore[index]
    assert await notes(pool, a) == [("like", b)]
    await f.batch(like(p, b, LikeRemoved))
    assert (await the_post(pool, p))["likes_count"] == 1  # type: ignore[index]
    assert await notes(pool, a) == []


async def test_follow_request_flow(settings: Settings, pool: asyncpg.Pool) -> None:
    f = await feeder(settings, pool)
    a, b, c = n(), n(), n()
    p = post(b, visibility="followers")
    await f.batch(p)
    await f.each(follow(a, b, FollowRequested), follow(c, b, FollowRequested))
    assert await notes(pool, b) == [("follow_request", a), ("follow_request", c)]
    await f.batch(
        new_event(FollowRequestApproved, actor_id=b, data=FollowData(follower_id=a, followee_id=b))
    )
    await f.batch(
        new_event(FollowRequestRejected, actor_id=b, data=FollowData(follower_id=c, followee_id=b))
    )
    assert not await pool.fetchval("SELECT count(*) FROM follow_requests WHERE followee_id=$1", b)
    assert await notes(pool, b) == []
    assert await pool.fetchval(
        "SELECT active FROM follows WHERE follower_id=$1 AND followee_id=$2", a, b
    )
    assert await home(pool, a) == [pid(p)]
    assert await home(pool, c) == []
    # A withdrawal ends a pending request; a block ends requests both ways.
    await f.batch(follow(c, b, FollowRequested))
    await f.batch(follow(c, b, FollowRemoved))
    await f.batch(follow(b, c, FollowRequested), follow(c, b, FollowRequested))
    await f.batch(block(b, c))
    assert not await pool.fetchval(
        "SELECT count(*) FROM follow_requests WHERE followee_id=$1 OR follower_id=$1", c
    )
    assert await notes(pool, b) == [] and await notes(pool, c) == []


async def test_follow_notification_block_and_mute(settings: Settings, pool: asyncpg.Pool) -> None:
    f = await feeder(settings, pool)
    a, b, c = n(), n(), n()
    mute = new_event(MuteCreated, actor_id=a, data=MuteData(muter_id=a, muted_id=c))
    await f.batch(user(a), user(b), user(c))
    await f.each(follow(b, a), mute, follow(c, a))
    assert await readable(pool, a) == [("follow", b)]  # c is muted
    await f.batch(block(a, b))
    assert await readable(pool, a) == []
    assert ("follow", b) not in await notes(pool, a)  # older than the block: gone
    p = post(a, mentions=(mention(b),))
    await f.batch(p)
    assert await readable(pool, b) == []  # never served between a blocked pair


async def test_follow_merges_only_viewable_posts(settings: Settings, pool: asyncpg.Pool) -> None:
    f = await feeder(settings, pool)
    a, b, other = n(), n(), n()
    aud = n()
    await f.each(
        new_event(
            AudienceCreated, actor_id=b, data=AudienceData(audience_id=aud, owner_id=b, name="x")
        )
    )
    pub = post(b)
    fol = post(b, visibility="followers")
    au = post(b, visibility="audience", audience_id=aud)
    dm_other = post(b, visibility="direct", mentions=(mention(other),))
    dm_a = post(b, visibility="direct", mentions=(mention(a),))
    await f.batch(pub, fol, au, dm_other, dm_a)
    await f.batch(follow(a, b))
    assert await home(pool, a) == sorted([pid(pub), pid(fol), pid(dm_a)])
    # Unfollowing removes what the follow delivered, not the direct post that mentions a.
    await f.batch(follow(a, b, FollowRemoved))
    assert await home(pool, a) == [pid(dm_a)]


async def test_audience_membership_and_deletion(settings: Settings, pool: asyncpg.Pool) -> None:
    f = await feeder(settings, pool)
    owner, m1, m2 = n(), n(), n()
    aud = n()
    md = lambda m: AudienceMemberData(audience_id=aud, owner_id=owner, member_id=m)  # noqa: E731
    await f.each(
        new_event(
            AudienceCreated,
            actor_id=owner,
            data=AudienceData(audience_id=aud, owner_id=owner, name="x"),
        ),
        new_event(AudienceMemberAdded, actor_id=owner, data=md(m1)),
    )
    p = post(owner, visibility="audience", audience_id=aud)
    await f.batch(p)
    await f.batch(new_event(AudienceMemberAdded, actor_id=owner, data=md(m2)))
    assert await home(pool, m1) == [pid(p)] and await home(pool, m2) == [pid(p)]
    await f.batch(new_event(AudienceMemberRemoved, actor_id=owner, data=md(m1)))
    assert await home(pool, m1) == []
    await f.batch(
        new_event(
            AudienceDeleted, actor_id=owner, data=AudienceData(audience_id=aud, owner_id=owner)
        )
    )
    assert await home(pool, m2) == [] and await home(pool, owner) == [pid(p)]


async def test_stream_wakeup_names_the_users(settings: Settings, pool: asyncpg.Pool) -> None:
    f = await feeder(settings, pool)
    a, b = n(), n()
    got: asyncio.Queue[str] = asyncio.Queue()
    conn = await asyncpg.connect(settings.database_url)
    try:
        await conn.add_listener("stream_wakeup", lambda *args: got.put_nowait(args[3]))
        await f.batch(follow(b, a))
        await f.batch(post(a))
        payloads = [await asyncio.wait_for(got.get(), 5) for _ in range(2)]
    finally:
        await conn.close()
    assert payloads[0] == str(a)  # the follow notification
    assert payloads[1] == ",".join(str(u) for u in sorted((a, b)))


async def test_planning_failure_is_dead_lettered(
    settings: Settings, pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    f = await feeder(settings, pool)
    real = runner.ops_for

    def picky(event: Any) -> Any:
        if isinstance(event, FollowCreated):
            raise ValueError("no rule")
        return real(event)

    monkeypatch.setattr(runner, "ops_for", picky)
    a, b = n(), n()
    p = post(a)
    await f.batch(follow(b, a), p)
    row = await pool.fetchrow(
        'SELECT reason, "offset" FROM dead_letters WHERE topic=$1', f.settings.topic
    )
    assert row is not None and (row["reason"], row["offset"]) == ("projection_failed", 0)
    assert await the_post(pool, p) is not None  # the partition moved on


async def test_timelines_are_trimmed_amortized(
    settings: Settings, pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(trimmer, "TRIM_EVERY", 3)
    monkeypatch.setattr(trimmer, "TRIM_MIN_INTERVAL_S", 0.0)
    f = await feeder(settings, pool, timeline_cap=4)
    a = n()
    posts = [post(a) for _ in range(6)]
    await f.batch(*posts[:3])
    await f.batch(*posts[3:])  # 6 rows > 4 * 1.25: trimmed on the third batch
    assert len(await home(pool, a)) == 6
    await f.batch(user(n()))
    await f.projector.trimmer.idle()  # the trim runs beside the batches, in its own transaction
    assert await home(pool, a) == sorted(map(pid, posts))[-4:]
    assert f.projector.stats.timeline_rows_trimmed == 2


# ---------------------------------------------------------------- convergence


async def snapshot(pool: asyncpg.Pool, users: Sequence[int], posts: Sequence[PostCreated]) -> Any:
    out = []
    for u in users:
        out.append(await home(pool, u))
        out.append(await notes(pool, u))
        out.append(
            await pool.fetch(
                "SELECT followee_id, active FROM follows WHERE follower_id=$1 ORDER BY 1", u
            )
        )
        out.append(
            await pool.fetch(
                "SELECT followee_id FROM follow_requests WHERE follower_id=$1 ORDER BY 1", u
            )
        )
    for p in posts:
        row = await pool.fetchrow(
            "SELECT conversation_id, replies_count, reposts_count, likes_count"
            " FROM posts WHERE post_id=$1",
            pid(p),
        )
        out.append(tuple(row) if row else None)
    return out


async def converge(settings: Settings, pool: asyncpg.Pool, make: Any, limit: int = 0) -> None:
    """Project the same scenario (fresh ids each time) in every order (or in `limit` random
    orders) and compare snapshots after mapping ids back to roles."""
    results = []
    count = len(make()[0])
    orders: list[tuple[int, ...]] = list(itertools.permutations(range(count)))
    if limit and len(orders) > limit:
        orders = [orders[0], *random.Random(count).sample(orders[1:], limit - 1)]
    for order in orders:
        events, users, posts = make()
        f = await feeder(settings, pool)
        for i in order:
            await f.batch(events[i])
        snap = await snapshot(pool, users, posts)
        roles = {u: f"u{k}" for k, u in enumerate(users)}
        roles |= {pid(p): f"p{k}" for k, p in enumerate(posts)}
        reposts = [e for e in events if isinstance(e, PostReposted)]
        roles |= {e.data.repost_id: f"r{k}" for k, e in enumerate(reposts)}
        results.append((order, _rename(snap, roles)))
    first = results[0][1]
    for order, snap in results[1:]:
        assert snap == first, f"order {order} diverged"


def _rename(value: Any, roles: dict[int, str]) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        return roles.get(value, value)
    if isinstance(value, (list, tuple, asyncpg.Record)):
        return [_rename(v, roles) for v in value]
    return value


async def test_reply_chain_converges_in_any_order(settings: Settings, pool: asyncpg.Pool) -> None:
    def make() -> Any:
        a, b, c = n(), n(), n()
        root = post(a)
        r1 = reply(b, root)
        r2 = reply(c, r1)
        return [root, r1, r2], [a, b, c], [root, r1, r2]

    await converge(settings, pool, make)


async def test_likes_and_reposts_converge_with_their_post(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    def make() -> Any:
        a, b, fan = n(), n(), n()
        p = post(a)
        return [p, like(p, b), repost(p, b), follow(fan, b)], [a, b, fan], [p]

    await converge(settings, pool, make)


async def test_follow_request_answers_converge(settings: Settings, pool: asyncpg.Pool) -> None:
    def make() -> Any:
        a, b = n(), n()
        req = follow(a, b, FollowRequested)
        ok = new_event(
            FollowRequestApproved, actor_id=b, data=FollowData(follower_id=a, followee_id=b)
        )
        p = post(b, visibility="followers")
        return [req, ok, p], [a, b], [p]

    await converge(settings, pool, make)


async def test_notifications_and_block_converge(settings: Settings, pool: asyncpg.Pool) -> None:
    def make() -> Any:
        a, b = n(), n()
        p = post(a)
        return [p, like(p, b), follow(b, a), block(a, b)], [a, b], [p]

    await converge(settings, pool, make)


async def test_a_skipped_repost_shows_once_the_original_leaves(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    f = await feeder(settings, pool)
    u, author, x = n(), n(), n()
    await f.each(follow(u, author), follow(u, x))
    p = post(author)
    await f.batch(p)
    rx = repost(p, x)
    await f.batch(rx)
    assert await home(pool, u) == [pid(p)]  # the post shows once
    await f.batch(follow(u, author, FollowRemoved))
    assert await home(pool, u) == [rx.data.repost_id]


async def test_reposts_converge_with_follows(settings: Settings, pool: asyncpg.Pool) -> None:
    def make() -> Any:
        u, author, x, y = n(), n(), n(), n()
        p = post(author)
        events = [follow(u, author), follow(u, x), follow(u, y), p, repost(p, x), repost(p, y)]
        return [*events, follow(u, author, FollowRemoved)], [u, author, x, y], [p]

    await converge(settings, pool, make, limit=40)


async def test_mutes_converge_with_notifications(settings: Settings, pool: asyncpg.Pool) -> None:
    def make() -> Any:
        a, b = n(), n()
        p = post(a)
        mute = new_event(MuteCreated, actor_id=a, data=MuteData(muter_id=a, muted_id=b))
        return [p, mute, like(p, b)], [a, b], [p]

    await converge(settings, pool, make)


async def test_odd_characters_in_lists_survive(settings: Settings, pool: asyncpg.Pool) -> None:
    f = await feeder(settings, pool)
    a = n()
    tag = 'a"b,{c}\\ null'
    p = post(a, hashtags=(tag,), links=('https://x.io/?q="1",2',))
    await f.batch(p)
    row = await the_post(pool, p)
    assert (
        row is not None and row["hashtags"] == [tag] and row["links"] == ['https://x.io/?q="1",2']
    )
    assert await pool.fetchval("SELECT tag FROM post_tags WHERE post_id=$1", pid(p)) == tag


async def test_a_chain_arriving_in_one_run_reroots_earlier_descendants(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    f = await feeder(settings, pool)
    u = n()
    root = post(u)
    a = reply(u, root)
    b = reply(u, a)
    c = reply(u, b)
    d = reply(u, c)
    await f.batch(root)
    await f.batch(d)  # another partition ran ahead: d takes its parent as root
    await f.batch(c)
    await f.batch(a, b)  # one run: both rows are written by one statement
    for p in (a, b, c, d):
        assert (await the_post(pool, p))["conversation_id"] == pid(root)  # type: ignore[index]
