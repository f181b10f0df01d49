"""The timeline pages' items are built as JSON by PostgreSQL (page_sql.page_json) and must
be exactly what views.item makes of the hydrated rows, for every kind of field: optional ids,
times with and without a fraction, mentions (names shorter than ids, as zip truncates), tags,
links, media, reposts, and the audience name only for the author."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
import msgspec
import pytest

from services.query import repository, views
from services.query.pagination import Page
from shared.ids import SnowflakeGenerator, snowflake_time

pytestmark = pytest.mark.integration

# Its own worker id: two generators with one id in one process can hand out the same id.
_ids = SnowflakeGenerator(worker_id=1020)


async def _user(conn: asyncpg.Connection, display: str = "", avatar: str | None = None) -> int:
    user_id = _ids.next_id()
    await conn.execute(
        "INSERT INTO users (user_id, username, display_name, avatar_url, created_at)"
        " VALUES ($1, $2, $3, $4, $5)",
        user_id,
        f"j{uuid.uuid4().hex[:12]}",
        display,
        avatar,
        snowflake_time(user_id),
    )
    return user_id


async def _post(conn: asyncpg.Connection, author: int, **cols: Any) -> int:
    post_id = _ids.next_id()
    cols = {"text": "x", "created_at": datetime.now(UTC), **cols}
    names = ", ".join(["post_id", "author_id", *cols])
    marks = ", ".join(f"${i}" for i in range(1, len(cols) + 3))
    await conn.execute(
        f"INSERT INTO posts ({names}) VALUES ({marks})", post_id, author, *cols.values()
    )
    return post_id


def _reference(rows: list[asyncpg.Record], viewer: int | None) -> list[Any]:
    return [msgspec.json.decode(msgspec.json.encode(views.item(r, viewer))) for r in rows]


async def test_page_items_equal_views_item(db: asyncpg.Connection) -> None:
    author = await _user(db, 'Ann "the author" Ö', "https://img.example/a.png")
    viewer = await _user(db)
    reposter = await _user(db, "Rex")
    named = await _user(db)
    await db.execute(
        "INSERT INTO follows (follower_id, followee_id, active, version, since)"
        " SELECT $1, f, true, $2, now() FROM unnest($3::bigint[]) f",
        viewer,
        uuid.uuid4(),
        [author, reposter],
    )
    audience = _ids.next_id()
    await db.execute(
        "INSERT INTO audiences (audience_id, owner_id, name, created_at)"
        " VALUES ($1, $2, $3, now())",
        audience,
        author,
        'work "inner" \\ circle',
    )
    await db.execute(
        "INSERT INTO audience_members (audience_id, member_id) VALUES ($1, $2)", audience, viewer
    )
    whole_second = datetime(2026, 11, 1, 12, 0, 0, tzinfo=UTC)
    plain = await _post(
        db, author, text='line\nbreak "quoted" \\ é 🎉 <b>', created_at=whole_second
    )
    rich = await _post(
        db,
        author,
        visibility="followers",
        mentions=[named, viewer, reposter],
        mention_names=["named", "viewer"],  # shorter: the third mention has no name
        hashtags=["one", "two"],
        links=["https://example.com/?a=1&b=2"],
        media=json.dumps([{"type": "photo", "url": "https://img.example/p.jpg", "w": 10}]),
        edited_at=datetime(2026, 11, 2, 1, 2, 3, 450000, tzinfo=UTC),
        in_reply_to_id=plain,
        conversation_id=plain,
        quote_of_id=plain,
        replies_count=3,
        reposts_count=1,
        likes_count=7,
    )
    private = await _post(db, author, visibility="audience", audience_id=audience)
    repost = _ids.next_id()
    await db.execute(
        "INSERT INTO reposts (repost_id, post_id, reposter_id, created_at)"
        " VALUES ($1, $2, $3, now())",
        repost,
        plain,
        reposter,
    )
    # A repost by someone whose registration is not projected yet (another partition): the
    # item still names the reposter, by id only, as views.item does.
    lone = await _post(db, author)
    ghost, ghost_repost = _ids.next_id(), _ids.next_id()
    await db.execute(
        "INSERT INTO reposts (repost_id, post_id, reposter_id, created_at)"
        " VALUES ($1, $2, $3, now())",
        ghost_repost,
        lone,
        ghost,
    )
    rows = [(u, p, author, None) for u in (viewer, author) for p in (plain, rich, private)]
    rows.append((viewer, repost, reposter, plain))
    rows.append((viewer, ghost_repost, ghost, lone))
    await db.executemany(
        "INSERT INTO home_timeline (user_id, post_id, author_id, reposted_post_id)"
        " VALUES ($1, $2, $3, $4)",
        rows,
    )

    hydrated_home = repository._hydrate(repository._home_inner("DESC"))
    for who in (viewer, author):
        page = await repository.home_timeline(db, who, Page())
        expected = _reference(await db.fetch(hydrated_home, who, *_bounds()), who)
        assert [r["key"] for r in page] == sorted([r[1] for r in rows if r[0] == who], reverse=True)
        assert [json.loads(r["item"]) for r in page] == expected

    # The fields that tell the cases apart really were there to compare.
    as_viewer = {
        i["post_id"]: i
        for i in _reference(await db.fetch(hydrated_home, viewer, *_bounds()), viewer)
    }
    assert "audience_name" not in as_viewer[str(private)]
    assert as_viewer[str(rich)]["mentions"] == [
        {"user_id": str(named), "username": "named"},
        {"user_id": str(viewer), "username": "viewer"},
    ]
    assert as_viewer[str(plain)]["created_at"] == "2026-11-01T12:00:00Z"
    reposted = [
        i
        for i in _reference(await db.fetch(hydrated_home, viewer, *_bounds()), viewer)
        if "repost_id" in i
    ]
    by_repost = {i["repost_id"]: i["reposted_by"] for i in reposted}
    assert by_repost[str(repost)]["display_name"] == "Rex"
    assert by_repost[str(ghost_repost)] == {
        "user_id": str(ghost),
        "username": None,
        "display_name": None,
        "avatar_url": None,
    }
    as_author = {
        json.loads(r["item"])["post_id"]: json.loads(r["item"])
        for r in await repository.home_timeline(db, author, Page())
    }
    assert as_author[str(private)]["audience_name"] == 'work "inner" \\ circle'

    # The profile page: the author's posts and their reposts, for the viewer and anonymously.
    for who in (viewer, None):
        for user in (author, reposter):
            page = await repository.user_posts(db, who, user, Page())
            assert page, (who, user)
            assert [json.loads(r["item"]) for r in page] == _reference(
                await db.fetch(repository._hydrate(repository._USER_INNER), who, *_bounds(), user),
                who,
            )

    # An edit rewrites the stored part of the item (posts.body_json) with the row: the page
    # shows the new text, tags and time, still exactly as views.item.
    await db.execute(
        "UPDATE posts SET text = $2, hashtags = $3, mentions = $4, mention_names = $5,"
        " edited_at = $6 WHERE post_id = $1",
        plain,
        "edited \u2603",
        ["three"],
        [named],
        ["named"],
        datetime(2026, 11, 3, 4, 5, 6, tzinfo=UTC),
    )
    page = await repository.home_timeline(db, viewer, Page())
    items = {json.loads(r["item"])["post_id"]: json.loads(r["item"]) for r in page}
    assert [json.loads(r["item"]) for r in page] == _reference(
        await db.fetch(hydrated_home, viewer, *_bounds()), viewer
    )
    edited = items[str(plain)]
    assert (edited["text"], edited["hashtags"], edited["edited_at"]) == (
        "edited \u2603",
        ["three"],
        "2026-11-03T04:05:06Z",
    )
    assert edited["mentions"] == [{"user_id": str(named), "username": "named"}]


async def test_batched_pages_equal_one_statement_each(db: asyncpg.Connection) -> None:
    """repository.home_pages (concurrent reads, home_reads.py) answers each (viewer, page) in
    its slot exactly as home_timeline does alone: other viewers' rows never leak in, each
    page keeps its own bounds and limit, unused slots read nothing."""
    viewers = [await _user(db) for _ in range(3)]
    author = await _user(db)
    posts = [await _post(db, author) for _ in range(5)]
    await db.executemany(
        "INSERT INTO home_timeline (user_id, post_id, author_id) VALUES ($1, $2, $3)",
        [(v, p, author) for v in viewers[:2] for p in posts] + [(viewers[2], posts[0], author)],
    )
    reads = [
        (viewers[0], Page()),
        (viewers[1], Page(limit=2)),
        (viewers[0], Page(max_id=posts[3], since_id=posts[0])),
        (viewers[2], Page()),
        (author, Page()),  # nothing in their own timeline here
    ]
    batched = await repository.home_pages(db, reads)
    alone = [await repository.home_timeline(db, v, page) for v, page in reads]
    assert [[(r["key"], r["item"]) for r in rows] for rows in batched] == [
        [(r["key"], r["item"]) for r in rows] for rows in alone
    ]
    assert [len(rows) for rows in batched] == [5, 2, 2, 1, 0]
    full = await repository.home_pages(db, [(viewers[0], Page())] * repository.HOME_BATCH)
    assert [len(rows) for rows in full] == [5] * repository.HOME_BATCH


def _bounds() -> tuple[int, int, int]:
    page = Page()
    return page.max_id, page.since_id, page.limit
