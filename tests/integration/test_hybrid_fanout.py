"""Hybrid fan-out on real PostgreSQL: a post delivered by pull writes no follower rows, and every
home read path (one page, pages read together, the stream's catch-up) merges it in for exactly
the viewers who follow its author now, whatever order the events were projected in."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import asyncpg
import msgspec
import pytest

from services.query import repository
from services.query.home_reads import HomeReads
from services.query.pagination import Page
from services.query.pull_state import PullAuthors
from shared.db import create_pool, migrate
from shared.events import FollowRemoved, MuteCreated, MuteData, PostCreated, new_event
from shared.listener import Listener
from shared.settings import Settings
from tests.infra import unique_name
from tests.integration.test_projector_domain import (
    block,
    feeder,
    follow,
    home,
    mention,
    n,
    pid,
    pool,
    post,
    repost,
    user,
)

pytestmark = pytest.mark.integration

__all__ = ["pool"]  # the fixture, re-used


def pulled(author: int, **fields: Any) -> PostCreated:
    return post(author, "from a wide account", delivery="pull", **fields)


async def people(f: Any, count: int) -> list[int]:
    """`count` registered users (a page joins each post's author's profile)."""
    ids = [n() for _ in range(count)]
    await f.batch(*(user(u) for u in ids))
    return ids


async def served(db: asyncpg.Pool, viewer: int, page: Page | None = None) -> list[int]:
    """The home timeline a reader gets: keys (post ids, or a repost's id), newest first."""
    rows = await repository.home_timeline(db, viewer, page or Page())
    return [r["key"] for r in rows]


async def pull_pairs(db: asyncpg.Pool, author: int) -> list[int]:
    rows = await db.fetch(
        "SELECT follower_id FROM pulled_follows WHERE author_id = $1 ORDER BY 1", author
    )
    return [r["follower_id"] for r in rows]


async def test_a_pulled_post_is_read_not_written(settings: Settings, pool: asyncpg.Pool) -> None:
    f = await feeder(settings, pool)
    author, fan, other_fan, stranger = await people(f, 4)
    await f.batch(follow(fan, author), follow(other_fan, author))
    p = pulled(author)
    await f.batch(p)

    rows = await pool.fetch("SELECT user_id FROM home_timeline WHERE post_id = $1", pid(p))
    assert [r["user_id"] for r in rows] == [author]  # only the author's own row
    assert (await pool.fetchrow("SELECT pulled FROM posts WHERE post_id = $1", pid(p)))["pulled"]
    assert await pull_pairs(pool, author) == sorted((fan, other_fan))
    assert await served(pool, fan) == [pid(p)]
    assert await served(pool, other_fan) == [pid(p)]
    assert await served(pool, author) == [pid(p)]
    assert await served(pool, stranger) == []
    # Pages read together and the stream's catch-up merge it too.
    pages = await repository.home_pages(pool, [(fan, Page()), (stranger, Page())])
    assert [[r["key"] for r in page] for page in pages] == [[pid(p)], []]
    after = await repository.home_after(pool, fan, 0, 20)
    assert [r["key"] for r in after] == [pid(p)]


async def test_audience_and_direct_posts_are_always_pushed(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    f = await feeder(settings, pool)
    author, fan, friend = await people(f, 3)
    await f.batch(follow(fan, author))
    direct = pulled(author, visibility="direct", mentions=(mention(friend),))
    await f.batch(direct)
    assert await home(pool, friend) == [pid(direct)]
    assert await pull_pairs(pool, author) == []
    assert await served(pool, friend) == [pid(direct)]
    assert await served(pool, fan) == []


async def test_who_reads_a_pulled_post_follows_the_follow_graph_now(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    f = await feeder(settings, pool)
    author, stays, leaves, blocked, late = await people(f, 5)
    await f.batch(follow(stays, author), follow(leaves, author), follow(blocked, author))
    p = pulled(author)
    await f.batch(p)
    await f.batch(follow(late, author))  # after the post: merged at read time, not written
    await f.batch(follow(leaves, author, FollowRemoved))
    await f.batch(block(author, blocked))

    assert await pull_pairs(pool, author) == sorted((stays, late))
    assert await served(pool, stays) == [pid(p)]
    assert await served(pool, late) == [pid(p)]
    assert await home(pool, late) == []
    assert await served(pool, leaves) == []
    assert await served(pool, blocked) == []


async def test_mutes_and_self_follows_of_pull_authors(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    f = await feeder(settings, pool)
    author, muter, fan = await people(f, 3)
    await f.batch(follow(muter, author), follow(fan, author), follow(author, author))
    p = pulled(author)
    await f.batch(p)
    mute = MuteData(muter_id=muter, muted_id=author)
    await f.batch(new_event(MuteCreated, actor_id=muter, data=mute))
    assert await served(pool, muter) == []
    assert await served(pool, fan) == [pid(p)]
    assert await served(pool, author) == [pid(p)]  # once: a self-follow pulls nothing


async def test_a_repost_of_a_pulled_post_steps_aside_while_its_author_is_followed(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    f = await feeder(settings, pool)
    author, friend, viewer = await people(f, 3)
    await f.batch(follow(viewer, author), follow(viewer, friend))
    p = pulled(author)
    await f.batch(p)
    shared = repost(p, friend)
    await f.batch(shared)
    assert await served(pool, viewer) == [pid(p)]  # once, as the original
    await f.batch(follow(viewer, author, FollowRemoved))
    assert await served(pool, viewer) == [shared.data.repost_id]  # the repost shows now


async def test_pages_merge_pushed_and_pulled_posts_in_order(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    f = await feeder(settings, pool)
    wide, narrow, viewer = await people(f, 3)
    await f.batch(follow(viewer, wide), follow(viewer, narrow))
    posts = [pulled(wide) if i % 3 else post(narrow) for i in range(7)]
    await f.batch(*posts)
    newest_first = [pid(p) for p in reversed(posts)]
    assert await served(pool, viewer) == newest_first
    walked: list[int] = []
    page = Page(limit=2)
    while chunk := await served(pool, viewer, page):
        walked += chunk
        page = Page(limit=2, max_id=chunk[-1])
    assert walked == newest_first
    since = await served(pool, viewer, Page(since_id=newest_first[3]))
    assert since == newest_first[:3]


async def test_pull_follows_converge_in_any_order(settings: Settings, pool: asyncpg.Pool) -> None:
    """Follow, unfollow and a pulled post in every order: the same readers, the same pages."""
    results = []
    for order in itertools.permutations(range(4)):
        f = await feeder(settings, pool)
        author, fan, quitter = await people(f, 3)
        p = pulled(author)
        events = [
            follow(fan, author),
            follow(quitter, author),
            p,
            follow(quitter, author, FollowRemoved),
        ]
        # Follow registers are last-writer-wins on the event id: an unfollow projected before
        # its (older) follow still wins.
        for i in order:
            await f.batch(events[i])
        roles = {author: "author", fan: "fan", quitter: "quitter", pid(p): "p"}
        results.append(
            (
                order,
                [roles[u] for u in await pull_pairs(pool, author)],
                [[roles[k] for k in await served(pool, u)] for u in (author, fan, quitter)],
            )
        )
    for order, pairs, pages in results:
        assert (pairs, pages) == (["fan"], [["p"], ["p"], []]), f"order {order}"


async def test_reads_merge_pulled_posts_from_the_first_pull_author_on(
    settings: Settings, infra: tuple[str, str]
) -> None:
    """In a database without pull authors the query service reads the push-only statement;
    the projector's notification switches it over before the pulled post's position is
    announced, and a lost LISTEN connection switches it back to the safe statement."""
    admin_url = infra[1]
    name = unique_name("mbpull")
    admin = await asyncpg.connect(admin_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = admin_url.rpartition("/")[0] + "/" + name
    listener = Listener(url, retry_s=0.1)
    try:
        await migrate(url)
        fresh = msgspec.structs.replace(settings, database_url=url)
        pool = await create_pool(url, min_size=1, max_size=3)
        pulls = PullAuthors()
        assert pulls.any  # nothing known yet: merge
        pulls.listen(listener)
        listener.start()
        await asyncio.wait_for(listener.ready.wait(), 10)
        assert not pulls.any
        reads = HomeReads(pool, 3, pulls)
        f = await feeder(fresh, pool)
        author, fan = await people(f, 2)
        pushed = post(author, "pushed")
        await f.batch(follow(fan, author), pushed)
        assert [r["key"] for r in await reads.read(fan, Page())] == [pid(pushed)]
        assert not pulls.any
        p = pulled(author)
        await f.batch(p)
        for _ in range(100):
            if pulls.any:
                break
            await asyncio.sleep(0.02)
        assert pulls.any
        assert [r["key"] for r in await reads.read(fan, Page())] == [pid(p), pid(pushed)]
        await reads.close()
        await pool.close()
    finally:
        await listener.stop()
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
    assert pulls.any  # not listening: the safe answer
