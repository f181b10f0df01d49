"""The post fan-out's edge cases on real PostgreSQL.

The fan-out insert has no ON CONFLICT (it is the benchmark's hot path), so every way a timeline
key could appear twice must be ruled out before the insert: a post duplicated in one run or
redelivered later, a self-follow, repeated or self mentions, an author in their own audience,
and (a broken log) a post whose id is already a repost's. None of them may fail the batch, which
would dead-letter a valid post.
"""

from __future__ import annotations

import uuid

import asyncpg
import pytest

from services.projector import runs, sql_fanout, store
from shared.events import (
    AudienceCreated,
    AudienceData,
    AudienceMemberAdded,
    AudienceMemberData,
    PostCreated,
    PostCreatedData,
    new_event,
)
from shared.settings import Settings
from tests.integration.test_projector_domain import (
    Feeder,
    feeder,
    follow,
    mention,
    n,
    pid,
    pool,
    post,
    repost,
)

pytestmark = pytest.mark.integration

__all__ = ["pool"]  # the fixture, re-used


async def dead_letters(pool: asyncpg.Pool, f: Feeder) -> int:
    return int(
        await pool.fetchval("SELECT count(*) FROM dead_letters WHERE topic = $1", f.settings.topic)
    )


async def rows_of(pool: asyncpg.Pool, post_id: int) -> list[int]:
    rows = await pool.fetch(
        "SELECT user_id FROM home_timeline WHERE post_id = $1 ORDER BY user_id", post_id
    )
    return [r["user_id"] for r in rows]


async def test_a_duplicated_or_redelivered_post_fans_out_once(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    f = await feeder(settings, pool)
    author, fan = n(), n()
    await f.batch(follow(fan, author))
    p = post(author)
    await f.batch(p, p)  # the same event twice in one run
    await f.batch(p)  # and redelivered
    assert await rows_of(pool, pid(p)) == sorted((author, fan))
    assert await dead_letters(pool, f) == 0


async def test_readers_are_counted_once_whatever_the_visibility(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    f = await feeder(settings, pool)
    author, fan, friend = n(), n(), n()
    aud = n()
    await f.batch(
        follow(author, author),  # a self-follow: projections never reject facts
        follow(fan, author),
        new_event(
            AudienceCreated,
            actor_id=author,
            data=AudienceData(audience_id=aud, owner_id=author, name="me too"),
        ),
        *[
            new_event(
                AudienceMemberAdded,
                actor_id=author,
                data=AudienceMemberData(audience_id=aud, owner_id=author, member_id=m),
            )
            for m in (author, friend)
        ],
    )
    pub = post(author)
    au = post(author, visibility="audience", audience_id=aud)
    dm = post(
        author,
        visibility="direct",
        mentions=(mention(friend), mention(friend), mention(author)),
    )
    await f.batch(pub, au, dm)
    assert await rows_of(pool, pid(pub)) == sorted((author, fan))
    assert await rows_of(pool, pid(au)) == sorted((author, friend))
    assert await rows_of(pool, pid(dm)) == sorted((author, friend))
    assert await dead_letters(pool, f) == 0


async def test_a_post_id_taken_by_a_repost_keeps_the_repost_row(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    f = await feeder(settings, pool)
    author, reposter, fan = n(), n(), n()
    await f.batch(follow(fan, reposter))
    original = post(author)
    await f.batch(original)
    shared = repost(original, reposter)
    await f.batch(shared)
    taken = shared.data.repost_id
    clash = new_event(
        PostCreated,
        actor_id=reposter,
        data=PostCreatedData(post_id=taken, author_id=reposter, text="same id"),
    )
    await f.batch(clash)
    assert await dead_letters(pool, f) == 0
    assert await pool.fetchval("SELECT count(*) FROM posts WHERE post_id = $1", taken) == 1
    # The repost's row in the follower's timeline is kept (the clashing post would take the
    # same key there); elsewhere the post fans out as usual.
    row = await pool.fetchrow(
        "SELECT author_id, reposted_post_id FROM home_timeline WHERE user_id = $1 AND post_id = $2",
        fan,
        taken,
    )
    assert row is not None
    assert (row["author_id"], row["reposted_post_id"]) == (reposter, pid(original))
    assert await rows_of(pool, taken) == sorted((fan, reposter))


async def test_a_fan_out_names_few_readers_and_calls_a_wide_one_many(
    pool: asyncpg.Pool,
) -> None:
    small, wide = n(), n()
    readers = [n() for _ in range(3)]
    crowd = sql_fanout.TOUCHED_SCAN_LIMIT + 1
    async with pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        try:
            await conn.execute(
                "INSERT INTO follows (follower_id, followee_id, active, version, since)"
                " SELECT u, $1, true, $2, now() FROM unnest($3::bigint[]) AS u",
                small,
                uuid.uuid4(),
                readers,
            )
            # Follower ids no other test uses (far below the snowflake ids of `n()`).
            await conn.execute(
                "INSERT INTO follows (follower_id, followee_id, active, version, since)"
                " SELECT g, $1, true, $2, now() FROM generate_series(1, $3) AS g",
                wide,
                uuid.uuid4(),
                crowd,
            )
            few = await store.apply(conn, runs.plan([post(small), post(small)]), 800)
            many = await store.apply(conn, runs.plan([post(wide)]), 800)
        finally:
            await tx.rollback()  # the crowd's follows and timelines stay out of other tests
    assert (few.fanned, few.users, few.overflow) == (8, {small, *readers}, False)
    assert (many.fanned, many.overflow, many.wide_authors) == (crowd + 1, True, {wide})
