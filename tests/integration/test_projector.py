"""The projector on real Kafka and PostgreSQL: fan-out, follow/unfollow/block/delete, offsets
in the same transaction, poison records, fencing, and convergence under reordering."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator

import asyncpg
import msgspec
import pytest
import pytest_asyncio
from aiokafka import AIOKafkaProducer

from services.projector import batch, store
from services.projector.project import ops_for
from services.projector.runner import Fenced, Projector
from services.projector.runs import slot
from services.projector.sql_posts import RECOUNT_REPLIES
from shared.db import create_pool
from shared.events import (
    BlockCreated,
    BlockData,
    FollowCreated,
    FollowData,
    FollowRemoved,
    PostCreated,
    PostCreatedData,
    PostDeleted,
    PostDeletedData,
    UserRegistered,
    UserRegisteredData,
    new_event,
)
from shared.ids import SnowflakeGenerator
from shared.kafka import EventPublisher, Position, make_producer
from shared.settings import Settings
from tests.infra import unique_name
from tests.records import consumer_record

pytestmark = pytest.mark.integration

ids = SnowflakeGenerator(worker_id=901)


@pytest_asyncio.fixture
async def publisher(settings: Settings) -> AsyncIterator[EventPublisher]:
    producer = make_producer(settings)
    await producer.start()
    try:
        yield EventPublisher(producer, settings.topic, 10)
    finally:
        await producer.stop()


@pytest_asyncio.fixture
async def pool(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    p = await create_pool(settings.database_url, min_size=1, max_size=4)
    try:
        yield p
    finally:
        await p.close()


async def run_until(projector: Projector, pool: asyncpg.Pool, topic: str, pos: Position) -> None:
    """Run the projector until it has passed `pos`, then stop it."""
    task = asyncio.create_task(projector.run())
    try:
        for _ in range(600):
            nxt = await pool.fetchval(
                "SELECT next_offset FROM projector_offsets WHERE topic=$1 AND partition=$2",
                topic,
                pos.partition,
            )
            if nxt is not None and nxt > pos.offset:
                return
            if task.done():
                task.result()
            await asyncio.sleep(0.05)
        raise AssertionError(f"projector did not reach {pos}")
    finally:
        projector.stop()
        await task


def user(uid: int, name: str) -> UserRegistered:
    return new_event(
        UserRegistered, actor_id=uid, data=UserRegisteredData(user_id=uid, username=name)
    )


def post(author: int, text: str) -> PostCreated:
    data = PostCreatedData(post_id=ids.next_id(), author_id=author, text=text)
    return new_event(PostCreated, actor_id=author, data=data)


def follow(a: int, b: int) -> FollowCreated:
    return new_event(FollowCreated, actor_id=a, data=FollowData(follower_id=a, followee_id=b))


async def timeline(pool: asyncpg.Pool, uid: int) -> list[int]:
    rows = await pool.fetch(
        "SELECT post_id FROM home_timeline WHERE user_id=$1 ORDER BY post_id DESC", uid
    )
    return [r["post_id"] for r in rows]


async def test_flow_fanout_follow_block_delete(
    settings: Settings, publisher: EventPublisher, pool: asyncpg.Pool
) -> None:
    a, b, c = ids.next_id(), ids.next_id(), ids.next_id()
    early = post(b, "before the follow")
    events = [user(a, unique_name("a")), user(b, unique_name("b")), user(c, unique_name("c"))]
    events += [early, follow(a, b), follow(b, a)]
    p1, p2 = post(b, "one"), post(b, "two")
    events += [p1, p2, post(a, "a speaks")]
    await project_all(settings, pool, [await publisher.publish(e) for e in events])

    a_home = await timeline(pool, a)
    # The follow merged B's earlier post; fan-out delivered the later ones; own posts included.
    assert {early.data.post_id, p1.data.post_id, p2.data.post_id} <= set(a_home)
    assert len(a_home) == 4
    assert await timeline(pool, c) == []

    # A blocks B: B's posts leave A's timeline, A's leave B's, both follow edges end.
    blk = new_event(BlockCreated, actor_id=a, data=BlockData(blocker_id=a, blocked_id=b))
    dele = new_event(
        PostDeleted, actor_id=b, data=PostDeletedData(post_id=p1.data.post_id, author_id=b)
    )
    await project_all(settings, pool, [await publisher.publish(e) for e in (blk, dele)])
    a_home = await timeline(pool, a)
    assert all(pid not in a_home for pid in (early.data.post_id, p2.data.post_id))
    active = await pool.fetchval(
        "SELECT count(*) FROM follows WHERE active AND follower_id = ANY($1::bigint[])", [a, b]
    )
    assert active == 0
    assert await pool.fetchval("SELECT count(*) FROM posts WHERE post_id=$1", p1.data.post_id) == 0
    assert p1.data.post_id not in await timeline(pool, b)


async def project_all(settings: Settings, pool: asyncpg.Pool, positions: list[Position]) -> None:
    """Project until every given position (on any partition) has been passed."""
    last: dict[int, Position] = {}
    for pos in positions:
        if pos.partition not in last or last[pos.partition].offset < pos.offset:
            last[pos.partition] = pos
    for pos in last.values():
        await run_until(Projector(settings, pool), pool, settings.topic, pos)


async def test_poison_records_are_dead_lettered_and_partition_moves_on(
    settings: Settings, publisher: EventPublisher, pool: asyncpg.Pool
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await producer.start()
    key = b"poison-key"
    try:
        bad = [b"not json", b'{"type":"post.exploded"}', b'{"type":"post.created","id":1}']
        metas = [await producer.send_and_wait(settings.topic, v, key=key) for v in bad]
    finally:
        await producer.stop()
    good = await publisher.publish(post(ids.next_id(), "after the poison"))
    projector = Projector(settings, pool)
    await run_until(
        projector, pool, settings.topic, Position(metas[-1].partition, metas[-1].offset)
    )
    await run_until(Projector(settings, pool), pool, settings.topic, good)
    rows = await pool.fetch(
        'SELECT reason, "offset" FROM dead_letters WHERE partition=$1 AND "offset" = ANY($2)',
        metas[0].partition,
        [m.offset for m in metas],
    )
    assert sorted(r["reason"] for r in rows) == ["invalid", "undecodable", "unknown_type"]


async def test_stale_instance_is_fenced(settings: Settings, pool: asyncpg.Pool) -> None:
    s = msgspec.structs.replace(settings, topic=unique_name("fence"))
    old, new = Projector(s, pool), Projector(s, pool)
    await old.claim([0])
    await new.claim([0])  # a rebalance handed partition 0 to the new instance
    rec = consumer_record(s.topic, 0, 0, b"x")
    with pytest.raises(Fenced):
        await old.apply_batch([rec])
    assert (
        await pool.fetchval("SELECT next_offset FROM projector_offsets WHERE topic=$1", s.topic)
        == 0
    )
    await new.apply_batch([rec])
    assert (
        await pool.fetchval("SELECT next_offset FROM projector_offsets WHERE topic=$1", s.topic)
        == 1
    )


@pytest.mark.parametrize("order", list(itertools.permutations(range(3))))
async def test_follow_and_block_converge_in_any_order(
    settings: Settings, pool: asyncpg.Pool, order: tuple[int, ...]
) -> None:
    """A's follow of B, B's block of A (later), B's post: any cross-partition order ends with
    no active follow and no B post in A's timeline."""
    a, b = ids.next_id(), ids.next_id()
    f = follow(a, b)
    blk = new_event(BlockCreated, actor_id=b, data=BlockData(blocker_id=b, blocked_id=a))
    p = post(b, "hello")
    events = [f, blk, p]
    s = msgspec.structs.replace(settings, topic=unique_name("conv"))
    projector = Projector(s, pool)
    await projector.claim([0])
    for offset, i in enumerate(order):
        await projector.apply_batch(
            [consumer_record(s.topic, 0, offset, msgspec.json.encode(events[i]))]
        )
    assert await timeline(pool, a) == []
    assert not await pool.fetchval(
        "SELECT active FROM follows WHERE follower_id=$1 AND followee_id=$2", a, b
    )
    # An unfollow after everything changes nothing further.
    unf = new_event(FollowRemoved, actor_id=a, data=FollowData(follower_id=a, followee_id=b))
    await projector.apply_batch([consumer_record(s.topic, 0, 3, msgspec.json.encode(unf))])
    assert await timeline(pool, a) == []


async def test_fan_outs_run_side_by_side_and_a_follow_waits_for_them(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    """Another instance's batch in flight holds author B's lock slot shared, as its fan-out of
    B's post does: this instance's fan-out of B's next post goes ahead, while A's follow of B,
    which merges B's posts, waits for that batch to commit (else it could miss its post)."""
    a, b = ids.next_id(), ids.next_id()
    s = msgspec.structs.replace(settings, topic=unique_name("slots"))
    projector = Projector(s, pool)
    await projector.claim([0, 1])
    first, second = post(b, "the other instance's"), post(b, "this instance's")
    async with pool.acquire() as other, other.transaction():
        await store.lock(other, ops_for(first))
        await other.execute(
            "INSERT INTO posts (post_id, author_id, text, created_at) VALUES ($1, $2, $3, now())",
            first.data.post_id,
            b,
            first.data.text,
        )
        await asyncio.wait_for(
            projector.apply_batch([consumer_record(s.topic, 0, 0, msgspec.json.encode(second))]), 10
        )
        follow_batch = asyncio.create_task(
            projector.apply_batch(
                [consumer_record(s.topic, 1, 0, msgspec.json.encode(follow(a, b)))]
            )
        )
        await asyncio.sleep(0.5)
        assert not follow_batch.done()
    await asyncio.wait_for(follow_batch, 10)
    # The follow ran after both and merged both posts.
    assert set(await timeline(pool, a)) == {first.data.post_id, second.data.post_id}


async def test_replies_to_one_post_from_two_instances_are_both_counted(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    """Another instance's batch in flight has stored a reply to B's post and recounted its
    replies; this instance's reply to the same post must recount after that batch commits,
    so the count is 2: recounting beside it, its statement's snapshot would not see the first
    reply and would write 1 once the parent's row lock is released."""
    b, c, d = ids.next_id(), ids.next_id(), ids.next_id()
    s = msgspec.structs.replace(settings, topic=unique_name("replies"))
    projector = Projector(s, pool)
    await projector.claim([0, 1])
    parent = post(b, "parent")
    pid = parent.data.post_id
    await projector.apply_batch([consumer_record(s.topic, 0, 0, msgspec.json.encode(parent))])

    def reply(author: int) -> PostCreated:
        data = PostCreatedData(
            post_id=ids.next_id(),
            author_id=author,
            text="a reply",
            in_reply_to_id=pid,
            in_reply_to_author_id=b,
        )
        return new_event(PostCreated, actor_id=author, data=data)

    first = reply(c)
    async with pool.acquire() as other, other.transaction():
        # The slots the other instance's batch of that reply takes.
        await store.lock(other, ops_for(first))
        await other.execute(
            "INSERT INTO posts (post_id, author_id, text, created_at, in_reply_to_id,"
            " in_reply_to_author_id, conversation_id) VALUES ($1, $2, 'x', now(), $3, $4, $3)",
            first.data.post_id,
            c,
            pid,
            b,
        )
        await other.execute(RECOUNT_REPLIES, [pid])
        second = asyncio.create_task(
            projector.apply_batch([consumer_record(s.topic, 1, 0, msgspec.json.encode(reply(d)))])
        )
        await asyncio.sleep(0.5)
        assert not second.done()
    await asyncio.wait_for(second, 10)
    assert await pool.fetchval("SELECT replies_count FROM posts WHERE post_id = $1", pid) == 2


def distinct_slots(n: int) -> list[int]:
    """n new user ids whose advisory-lock slots differ."""
    out: list[int] = []
    while len(out) < n:
        u = ids.next_id()
        if slot(u) not in {slot(v) for v in out}:
            out.append(u)
    return out


async def test_a_batchs_follows_commit_before_its_long_run_of_posts(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    """A batch with a follow and a long run of posts (a replay) is written in two
    transactions, each advancing the offset it covers: the follow commits, and releases its
    exclusive slots, while the posts still wait for a slot another instance holds."""
    # Users in different lock slots (one shared with E's or X's would make the follow wait).
    a, b, e, f, x = distinct_slots(5)
    s = msgspec.structs.replace(settings, topic=unique_name("parts"))
    projector = Projector(s, pool)
    await projector.claim([0])
    events = [follow(f, e), follow(a, b)] + [post(e, f"p{i}") for i in range(batch.MIN_SHARED_RUN)]
    records = [consumer_record(s.topic, 0, i, msgspec.json.encode(v)) for i, v in enumerate(events)]
    await projector.apply_batch(records[:1])  # F follows E

    async def stored() -> int:
        return await pool.fetchval(
            "SELECT next_offset FROM projector_offsets WHERE topic=$1 AND partition=0", s.topic
        )

    async with pool.acquire() as other, other.transaction():
        # The other instance's batch holds E's slot exclusive, as a follow of E would.
        await store.lock(other, ops_for(follow(x, e)))
        writing = asyncio.create_task(projector.apply_batch(records[1:]))
        for _ in range(100):
            if await stored() == 2:
                break
            await asyncio.sleep(0.05)
        # A's follow of B is committed with its offset; E's posts wait for E's slot.
        assert await stored() == 2
        assert await pool.fetchval("SELECT active FROM follows WHERE follower_id=$1", a)
        await asyncio.sleep(0.3)
        assert not writing.done() and await timeline(pool, f) == []
    await asyncio.wait_for(writing, 10)
    assert await stored() == len(events)
    assert len(await timeline(pool, f)) == batch.MIN_SHARED_RUN
