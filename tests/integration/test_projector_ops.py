"""Operator side of the projector on real Kafka and PostgreSQL: rebuild from offset 0 with
checksums (invariant 1), dead letters list/replay (invariant 7), schema evolution on the
topic, and /metrics."""

from __future__ import annotations

import asyncio
import io
import random
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import msgspec
import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from services.projector import deadletters, runner
from services.projector.__main__ import make_app
from services.projector.rebuild import READ_MODELS, checksums, rebuild
from services.projector.runner import Projector
from shared import codec
from shared.db import create_pool, migrate
from shared.events import (
    AudienceCreated,
    AudienceData,
    AudienceMemberAdded,
    AudienceMemberData,
    BlockCreated,
    BlockData,
    Event,
    FollowCreated,
    FollowData,
    FollowRemoved,
    LikeData,
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
    RepostData,
    UserRegistered,
    UserRegisteredData,
    new_event,
)
from shared.ids import SnowflakeGenerator
from shared.kafka import ensure_topics, make_producer
from shared.settings import Settings
from tests.infra import unique_name

pytestmark = pytest.mark.integration

ids = SnowflakeGenerator(worker_id=903)


@pytest_asyncio.fixture
async def own(settings: Settings, infra: tuple[str, str]) -> AsyncIterator[Settings]:
    """A database and topic of this test alone: a rebuild swaps every read model."""
    _, admin_url = infra
    name = unique_name("mbrebuild")
    conn = await asyncpg.connect(admin_url)
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    base = admin_url.rpartition("/")[0]
    topic = unique_name("rebuild")
    s = msgspec.structs.replace(
        settings,
        database_url=f"{base}/{name}",
        topic=topic,
        dead_letter_topic=f"{topic}.dlq",
        topic_partitions=4,
        projector_group=unique_name("projector"),
    )
    await migrate(s.database_url)
    await ensure_topics(s)
    try:
        yield s
    finally:
        conn = await asyncpg.connect(admin_url)
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.close()


@pytest_asyncio.fixture
async def pool(own: Settings) -> AsyncIterator[asyncpg.Pool]:
    p = await create_pool(own.database_url, min_size=1, max_size=4)
    try:
        yield p
    finally:
        await p.close()


async def publish_raw(s: Settings, values: list[tuple[bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=s.kafka_bootstrap_servers)
    await producer.start()
    try:
        for key, value in values:
            await producer.send_and_wait(s.topic, value, key=key)
    finally:
        await producer.stop()


async def publish(s: Settings, events: list[Event]) -> None:
    producer = make_producer(s)
    await producer.start()
    try:
        futures = [
            await producer.send(
                s.topic, codec.encode(e), key=codec.partition_key(e), headers=codec.headers(e)
            )
            for e in events
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def end_offsets(s: Settings) -> dict[int, int]:
    probe = make_producer(s)
    await probe.start()
    try:
        parts = await probe.partitions_for(s.topic)
    finally:
        await probe.stop()
    c = AIOKafkaConsumer(bootstrap_servers=s.kafka_bootstrap_servers)
    await c.start()
    try:
        ends = await c.end_offsets([TopicPartition(s.topic, p) for p in parts])
    finally:
        await c.stop()
    return {tp.partition: end for tp, end in ends.items()}


async def wait_for_end(s: Settings, pool: asyncpg.Pool, task: asyncio.Task[None]) -> None:
    """Wait until the running projector has applied everything on the topic."""
    ends = await end_offsets(s)
    for _ in range(600):
        rows = await pool.fetch(
            "SELECT partition, next_offset FROM projector_offsets WHERE topic=$1", s.topic
        )
        have = {r["partition"]: r["next_offset"] for r in rows}
        if all(have.get(p, 0) >= end for p, end in ends.items()):
            return
        if task.done():
            task.result()
        await asyncio.sleep(0.05)
    raise AssertionError("projector did not reach the end of the topic")


async def project_to_end(s: Settings, pool: asyncpg.Pool) -> Projector:
    """Run a projector until it has applied everything on the topic, then stop it."""
    projector = Projector(s, pool)
    task = asyncio.create_task(projector.run())
    try:
        await wait_for_end(s, pool, task)
        return projector
    finally:
        projector.stop()
        await task


def mixed_events(seed: int, users: int = 16, rounds: int = 260) -> list[Event]:
    """A plausible history: registrations, then follows, posts of every visibility, replies,
    likes, reposts, edits, deletes, unfollows, blocks, mutes and audiences."""
    rng = random.Random(seed)
    uids = [ids.next_id() for _ in range(users)]
    events: list[Event] = [
        new_event(UserRegistered, actor_id=u, data=UserRegisteredData(user_id=u, username=f"u{k}"))
        for k, u in enumerate(uids)
    ]
    posts: list[PostCreatedData] = []
    audiences: dict[int, int] = {}
    for owner in uids[:3]:
        aud = ids.next_id()
        audiences[owner] = aud
        events.append(
            new_event(
                AudienceCreated,
                actor_id=owner,
                data=AudienceData(audience_id=aud, owner_id=owner, name="friends"),
            )
        )
        for m in rng.sample(uids, 4):
            if m != owner:
                md = AudienceMemberData(audience_id=aud, owner_id=owner, member_id=m)
                events.append(new_event(AudienceMemberAdded, actor_id=owner, data=md))
    for _ in range(rounds):
        a, b = rng.sample(uids, 2)
        roll = rng.random()
        if roll < 0.25:
            fd = FollowData(follower_id=a, followee_id=b)
            events.append(new_event(FollowCreated, actor_id=a, data=fd))
        elif roll < 0.55:
            vis = rng.choice(["public", "public", "unlisted", "followers", "direct", "audience"])
            if vis == "audience" and a not in audiences:
                vis = "public"
            parent = rng.choice(posts) if posts and rng.random() < 0.3 else None
            data = PostCreatedData(
                post_id=ids.next_id(),
                author_id=a,
                text="hello #Tag",
                visibility=vis,  # type: ignore[arg-type]
                audience_id=audiences.get(a) if vis == "audience" else None,
                in_reply_to_id=parent.post_id if parent else None,
                in_reply_to_author_id=parent.author_id if parent else None,
                mentions=(Mention(user_id=b, username="x"),) if rng.random() < 0.4 else (),
                hashtags=("tag",),
            )
            posts.append(data)
            events.append(new_event(PostCreated, actor_id=a, data=data))
        elif roll < 0.65 and posts:
            p = rng.choice(posts)
            ld = LikeData(post_id=p.post_id, author_id=p.author_id, liker_id=a)
            events.append(new_event(PostLiked, actor_id=a, data=ld))
        elif roll < 0.73 and posts:
            p = rng.choice(posts)
            if p.visibility in ("public", "unlisted"):
                rd = RepostData(
                    repost_id=ids.next_id(), post_id=p.post_id, author_id=p.author_id, reposter_id=a
                )
                events.append(new_event(PostReposted, actor_id=a, data=rd))
        elif roll < 0.78 and posts:
            p = rng.choice(posts)
            ed = PostEditedData(post_id=p.post_id, author_id=p.author_id, text="edited")
            events.append(new_event(PostEdited, actor_id=p.author_id, data=ed))
        elif roll < 0.83 and posts:
            p = posts.pop(rng.randrange(len(posts)))
            dd = PostDeletedData(post_id=p.post_id, author_id=p.author_id)
            events.append(new_event(PostDeleted, actor_id=p.author_id, data=dd))
        elif roll < 0.9:
            fd = FollowData(follower_id=a, followee_id=b)
            events.append(new_event(FollowRemoved, actor_id=a, data=fd))
        elif roll < 0.95:
            events.append(
                new_event(BlockCreated, actor_id=a, data=BlockData(blocker_id=a, blocked_id=b))
            )
        else:
            events.append(new_event(MuteCreated, actor_id=a, data=MuteData(muter_id=a, muted_id=b)))
    return events


async def test_rebuild_from_offset_zero_is_identical(own: Settings, pool: asyncpg.Pool) -> None:
    events = mixed_events(seed=7)
    await publish(own, events)
    await project_to_end(own, pool)
    async with pool.acquire() as conn:
        live = await checksums(conn)
    assert int(live["home_timeline"].split()[0]) > 0 and int(live["notifications"].split()[0]) > 0

    out, err = io.StringIO(), io.StringIO()
    replayed = await rebuild(own, out=out, err=err)
    assert replayed == len(events)
    assert f"{len(events)}/{len(events)} events" in err.getvalue() and "events/s" in err.getvalue()
    async with pool.acquire() as conn:
        after = await checksums(conn)
        # Original index names survive the swap; nothing is left of the work schemas.
        assert await conn.fetchval("SELECT count(*) FROM pg_indexes WHERE indexname='posts_author'")
        schemas = await conn.fetchval(
            "SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'rebuild_%'"
            " OR nspname LIKE 'replaced_%'"
        )
        assert schemas == 0
    assert after == live
    for table in READ_MODELS:
        assert table in out.getvalue()

    # The live projector resumes after the replayed positions: nothing is applied twice.
    more = mixed_events(seed=8, rounds=20)
    await publish(own, more)
    await project_to_end(own, pool)
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM users") == 32


async def test_rebuild_while_the_projector_runs(own: Settings, pool: asyncpg.Pool) -> None:
    await publish(own, mixed_events(seed=3, rounds=150))
    projector = Projector(own, pool)
    task = asyncio.create_task(projector.run())
    try:
        rebuilding = asyncio.create_task(rebuild(own, out=io.StringIO(), err=io.StringIO()))
        await publish(own, mixed_events(seed=4, rounds=60))
        await rebuilding
        await publish(own, mixed_events(seed=5, rounds=20))
        await wait_for_end(own, pool, task)
    finally:
        projector.stop()
        await task
    async with pool.acquire() as conn:
        live = await checksums(conn)
    # Nothing was lost or doubled around the swap: a quiet rebuild gives the same tables.
    await rebuild(own, out=io.StringIO(), err=io.StringIO())
    async with pool.acquire() as conn:
        assert await checksums(conn) == live
        assert await conn.fetchval("SELECT count(*) FROM users") == 48


POISON = [
    (b"undecodable", b"\xff\xfe not json"),
    (b"unknown", b'{"type":"post.exploded","id":"0190d3a0-0000-7000-8000-000000000001"}'),
    (b"invalid", b'{"type":"post.created","id":1}'),
    (b"future", b'{"type":"post.created","schemaversion":9}'),
]


async def test_dead_letters_list_and_replay(
    own: Settings, pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    await publish_raw(own, POISON)
    a, b = ids.next_id(), ids.next_id()
    fd = FollowData(follower_id=a, followee_id=b)
    follow = new_event(FollowCreated, actor_id=a, data=fd)
    real = runner.ops_for

    def broken(event: Any) -> Any:  # the bug an operator fixes later
        if isinstance(event, FollowCreated):
            raise RuntimeError("bug")
        return real(event)

    monkeypatch.setattr(runner, "ops_for", broken)
    await publish(own, [follow])
    projector = await project_to_end(own, pool)
    assert projector.stats.dead_letters == 5

    out = io.StringIO()
    async with pool.acquire() as conn:
        assert await deadletters.list_dead_letters(conn, out) == 5
    reasons = ["undecodable", "unknown_type", "invalid", "future_version", "projection_failed"]
    for reason in reasons:
        assert reason in out.getvalue()

    monkeypatch.setattr(runner, "ops_for", real)  # the fix is deployed
    async with pool.acquire() as conn:
        failed_id = await conn.fetchval(
            "SELECT id FROM dead_letters WHERE reason='projection_failed'"
        )
        applied, kept = await deadletters.replay(conn, own, None, io.StringIO())
        assert (applied, kept) == (1, 4)
        assert await conn.fetchval("SELECT count(*) FROM dead_letters WHERE id=$1", failed_id) == 0
        assert await conn.fetchval(
            "SELECT active FROM follows WHERE follower_id=$1 AND followee_id=$2", a, b
        )
        msg = io.StringIO()
        assert await deadletters.replay(conn, own, failed_id, msg) == (0, 0)
        assert "no dead letter" in msg.getvalue()


async def test_old_and_newer_events_on_the_topic_project(own: Settings, pool: asyncpg.Pool) -> None:
    a = ids.next_id()
    v1 = new_event(
        PostCreated,
        actor_id=a,
        data=PostCreatedData(post_id=ids.next_id(), author_id=a, text="#Old", hashtags=("Old",)),
    )
    doc = msgspec.json.decode(codec.encode(v1))
    doc["schemaversion"] = 1
    newer = new_event(
        PostCreated, actor_id=a, data=PostCreatedData(post_id=ids.next_id(), author_id=a, text="x")
    )
    ndoc = msgspec.json.decode(codec.encode(newer))
    ndoc["data"]["language"] = "en"  # a field a later version added: ignored here
    key = str(a).encode()
    await publish_raw(own, [(key, msgspec.json.encode(doc)), (key, msgspec.json.encode(ndoc))])
    projector = await project_to_end(own, pool)
    assert projector.stats.dead_letters == 0
    tags = await pool.fetchval("SELECT hashtags FROM posts WHERE post_id=$1", v1.data.post_id)
    assert tags == ["old"]
    assert await pool.fetchval("SELECT count(*) FROM posts WHERE post_id=$1", newer.data.post_id)


async def test_metrics(own: Settings, pool: asyncpg.Pool) -> None:
    a = ids.next_id()
    await publish(
        own,
        [
            new_event(
                PostCreated,
                actor_id=a,
                data=PostCreatedData(post_id=ids.next_id(), author_id=a, text="m"),
            )
        ],
    )
    projector = await project_to_end(own, pool)
    client = TestClient(TestServer(make_app(projector)))
    await client.start_server()
    try:
        resp = await client.get("/metrics")
        text = await resp.text()
    finally:
        await client.close()
    assert resp.status == 200
    assert "microblog_projector_events_applied_total 1" in text
    assert "microblog_projector_timeline_rows_total 1" in text
    assert "microblog_projector_dead_letters_total 0" in text
    assert 'microblog_projector_batch_seconds_bucket{le="+Inf"} 1' in text
    assert "microblog_projector_events_per_second" in text
    assert 'microblog_projector_lag_events{partition="' in text
