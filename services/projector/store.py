"""Applies planned operations to PostgreSQL, inside the caller's transaction.

Thin on purpose: the decisions live in project.py; here each operation is one or a few
set-based statements, whose SQL lives in sql_posts.py and sql_relations.py. What the statements
report about touched timelines and notifications is gathered in `Applied` for the runner.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence

import asyncpg

from services.projector.project import (
    AddPosts,
    AddRepost,
    DeleteAudience,
    DeletePost,
    EditPost,
    NewPost,
    Notify,
    Op,
    RemoveRepost,
    RequestFollow,
    SetAudienceMember,
    SetBlock,
    SetFollow,
    SetFollows,
    SetLike,
    SetMute,
    UpdateProfile,
    UpsertAudience,
    UpsertUser,
    UpsertUsers,
)
from services.projector.runs import lock_slots
from services.projector.sql_fanout import (
    FAN_OUT,
    FAN_OUT_GUARDED,
    FAN_OUT_READERS,
    FAN_OUT_REPORTED,
    FAN_OUT_REPORTED_GUARDED,
    SMALL_RUN_POSTS,
    TOUCHED_SCAN_LIMIT,
)
from services.projector.sql_offsets import LOCK_SLOTS_SQL
from services.projector.sql_posts import (
    ADD_LIKE,
    ADD_REPOST,
    DELETE_POST,
    EDIT_POST,
    INSERT_PLAIN_POSTS,
    INSERT_POSTS,
    NOTIFY,
    POSTS_AFTER,
    RECOUNT_REPLIES,
    REGISTER_PULL,
    REMOVE_LIKE,
    REMOVE_REPOST,
    REPOST_FANOUT_BY_ID,
    REPOST_FANOUT_BY_ORIGINAL,
    REROOT,
    UPDATE_PROFILE,
)
from services.projector.sql_relations import (
    ADD_MEMBER,
    DELETE_AUDIENCE,
    END_FOLLOWS,
    REMOVE_MEMBER,
    REMOVE_UNFOLLOWED,
    REQUEST_FOLLOW,
    RESTORE_REPOSTS,
    TRIM,
    UNBLOCK_NOTIFICATIONS,
    UPSERT_AUDIENCE,
    UPSERT_BLOCK,
    UPSERT_MUTE,
)
from services.projector.store_runs import set_follows, upsert_users

NIL_VERSION = uuid.UUID(int=0)
MAX_REROOT_PASSES = 64


class Applied:
    """What a batch changed: timeline rows written by fan-outs, and whose feeds changed."""

    def __init__(self) -> None:
        self.fanned = 0
        self.users: set[int] = set()
        self.overflow = False
        # Authors whose posts fanned out to too many users to name; trimming visits their
        # followers instead.
        self.wide_authors: set[int] = set()

    def touch(self, row: asyncpg.Record | None) -> int:
        if row is None or not row["n"]:
            return 0
        users = row["users"]
        if users is None:
            self.overflow = True
        else:
            self.users.update(users)
        return int(row["n"])


# Users named in a wake-up at most; beyond, the payload says "many" (`*`).
WAKEUP_LIMIT = 500


def wakeup_payload(applied: Applied) -> str | None:
    """Users whose home timeline or notifications changed, for the query service's streams:
    comma-separated ids, or `*` for "many" (NOTIFY payloads must stay under 8000 bytes)."""
    if applied.overflow or len(applied.users) > WAKEUP_LIMIT:
        return "*"
    if not applied.users:
        return None
    payload = ",".join(str(u) for u in sorted(applied.users))
    return payload if len(payload) < 7900 else "*"


def pg_array(items: Iterable[object]) -> str:
    """A PostgreSQL array literal: unnest() cannot take jagged 2-D arrays, so per-post lists
    travel as literals and are cast in SQL."""
    parts = []
    for item in items:
        text = str(item).replace("\\", "\\\\").replace('"', '\\"')
        parts.append(f'"{text}"')
    return "{" + ",".join(parts) + "}"


async def _touch(conn: asyncpg.Connection, applied: Applied, sql: str, *args: object) -> int:
    return applied.touch(await conn.fetchrow(sql, *args))


async def lock(conn: asyncpg.Connection, ops: Iterable[Op]) -> None:
    """Take the advisory-lock slots `ops` need (runs.lock_slots) in the caller's transaction."""
    slots = lock_slots(ops)
    if slots:
        await conn.execute(LOCK_SLOTS_SQL, [s for s, _ in slots], [x for _, x in slots])


async def apply(conn: asyncpg.Connection, ops: Sequence[Op], timeline_cap: int) -> Applied:
    """Apply operations in order; returns the fan-out count and the users whose feeds changed."""
    out = Applied()
    for op in ops:
        match op:
            case AddPosts(posts=posts):
                await _add_posts(conn, out, posts)
            case Notify(notifications=notes):
                if notes:
                    await _touch(
                        conn,
                        out,
                        NOTIFY,
                        [n.user_id for n in notes],
                        [n.event_id for n in notes],
                        [n.kind for n in notes],
                        [n.actor_id for n in notes],
                        [n.post_id for n in notes],
                        [n.created_at for n in notes],
                    )
            case UpsertUser():
                await upsert_users(conn, (op,))
            case UpsertUsers(users=users):
                await upsert_users(conn, users)
            case UpdateProfile():
                await conn.execute(
                    UPDATE_PROFILE, op.user_id, op.display_name, op.bio, op.avatar_url, op.locked
                )
            case EditPost():
                await conn.execute(
                    EDIT_POST,
                    op.post_id,
                    op.text,
                    list(op.mentions),
                    list(op.mention_names),
                    list(op.hashtags),
                    list(op.links),
                    op.media_json,
                    op.at,
                )
            case DeletePost():
                await _touch(conn, out, DELETE_POST, op.post_id, op.author_id, op.at)
            case AddRepost():
                await conn.execute(ADD_REPOST, op.repost_id, op.post_id, op.reposter_id, op.at)
                out.fanned += await _touch(conn, out, REPOST_FANOUT_BY_ID, [op.repost_id])
            case RemoveRepost():
                rows = await conn.fetch(REMOVE_REPOST, op.repost_id, op.post_id, op.reposter_id)
                out.users.update(r["user_id"] for r in rows)
                await _restore_reposts(conn, out, [r for r in rows if r["original"]])
            case SetLike(active=True):
                await conn.execute(ADD_LIKE, op.post_id, op.user_id, op.at)
            case SetLike(active=False):
                await _touch(conn, out, REMOVE_LIKE, op.post_id, op.user_id)
            case SetFollow():
                await set_follows(conn, out, (op,), timeline_cap)
            case SetFollows(follows=follows):
                await set_follows(conn, out, follows, timeline_cap)
            case RequestFollow():
                await conn.execute(
                    REQUEST_FOLLOW, op.follower_id, op.followee_id, op.version, op.at
                )
            case SetBlock():
                await conn.execute(
                    UPSERT_BLOCK,
                    op.blocker_id,
                    op.blocked_id,
                    op.active,
                    op.version,
                    NIL_VERSION,
                    op.at,
                )
                if op.active:
                    await conn.execute(END_FOLLOWS, op.blocker_id, op.blocked_id, op.version)
                    rows = await conn.fetch(REMOVE_UNFOLLOWED, op.blocker_id, op.blocked_id)
                    out.users.update(r["user_id"] for r in rows)
                    await _restore_reposts(conn, out, rows)
                await _touch(conn, out, UNBLOCK_NOTIFICATIONS, op.blocker_id, op.blocked_id)
            case SetMute():
                await _touch(
                    conn,
                    out,
                    UPSERT_MUTE,
                    op.muter_id,
                    op.muted_id,
                    op.active,
                    op.expires_at,
                    op.version,
                    NIL_VERSION,
                )
            case UpsertAudience():
                await conn.execute(UPSERT_AUDIENCE, op.audience_id, op.owner_id, op.name, op.at)
            case DeleteAudience():
                await _touch(conn, out, DELETE_AUDIENCE, op.audience_id, op.owner_id, op.at)
            case SetAudienceMember(active=True):
                out.fanned += await _touch(
                    conn, out, ADD_MEMBER, op.audience_id, op.member_id, timeline_cap
                )
            case SetAudienceMember(active=False):
                await _touch(conn, out, REMOVE_MEMBER, op.audience_id, op.member_id)
    return out


async def _fan_out(
    post_ids: list[int], guarded: bool, conn: asyncpg.Connection
) -> tuple[int, list[int] | None]:
    """Write the new posts' timeline rows: how many, and their readers when few enough to name
    (None: too many; see sql_fanout.py). A small run does both in one statement."""
    if len(post_ids) <= SMALL_RUN_POSTS:
        row = await conn.fetchrow(
            FAN_OUT_REPORTED_GUARDED if guarded else FAN_OUT_REPORTED, post_ids
        )
        return (int(row["n"]), row["users"]) if row is not None else (0, [])
    status = await conn.execute(FAN_OUT_GUARDED if guarded else FAN_OUT, post_ids)
    rows = int(status.rsplit(" ", 1)[-1])
    if not rows or rows > TOUCHED_SCAN_LIMIT:
        return rows, None
    return rows, await conn.fetchval(FAN_OUT_READERS, post_ids)


def plain(p: NewPost) -> bool:
    """Whether a post is stored by INSERT_PLAIN_POSTS: its own thread, and nothing beyond text."""
    return (
        p.conversation_id == p.post_id
        and p.audience_id is None
        and p.in_reply_to_id is None
        and p.in_reply_to_author_id is None
        and p.quote_of_id is None
        and not (p.mentions or p.mention_names or p.hashtags or p.links)
        and p.media_json == "[]"
    )


async def _store_posts(conn: asyncpg.Connection, ps: Sequence[NewPost]) -> list[asyncpg.Record]:
    """Insert a run's posts (plain ones first: a reply in the run may be to one of them)."""
    pulled = [p.post_id for p in ps if p.pulled]
    flat: list[NewPost] = []
    rich: list[NewPost] = []
    for p in ps:
        (flat if plain(p) else rich).append(p)
    stored: list[asyncpg.Record] = []
    if flat:
        stored += await conn.fetch(INSERT_PLAIN_POSTS, *_text_columns(flat), pulled)
    if rich:
        stored += await conn.fetch(
            INSERT_POSTS,
            *_text_columns(rich),
            [p.audience_id for p in rich],
            [p.in_reply_to_id for p in rich],
            [p.in_reply_to_author_id for p in rich],
            [p.quote_of_id for p in rich],
            [p.conversation_id for p in rich],
            [pg_array(p.mentions) for p in rich],
            [pg_array(p.mention_names) for p in rich],
            [pg_array(p.hashtags) for p in rich],
            [pg_array(p.links) for p in rich],
            [p.media_json for p in rich],
            pulled,
        )
    return stored


def _text_columns(ps: Sequence[NewPost]) -> list[list[object]]:
    """The columns both insert statements start with: ids, authors, texts, times, visibility."""
    return [
        [p.post_id for p in ps],
        [p.author_id for p in ps],
        [p.text for p in ps],
        [p.created_at for p in ps],
        [p.visibility for p in ps],
    ]


async def _add_posts(conn: asyncpg.Connection, out: Applied, ps: Sequence[NewPost]) -> None:
    stored = await _store_posts(conn, ps)
    # A redelivered pulled post registers its author again: a no-op (ON CONFLICT).
    pull_authors = [p.author_id for p in ps if p.pulled]
    if pull_authors:
        await conn.execute(REGISTER_PULL, pull_authors)
        # Before the batch's projector_progress: readers switch to merging pulled posts first.
        await conn.execute("SELECT pg_notify('pull_authors', '')")
        # Followers read pulled posts from `posts`: every stream may have something new.
        out.overflow = True
    if stored:
        # Only the posts that are new fan out (a redelivered one is not returned).
        guarded = any(r["id_taken"] for r in stored)
        rows, users = await _fan_out([r["post_id"] for r in stored], guarded, conn)
        out.fanned += rows
        if rows and users is None:
            out.overflow = True
            out.wide_authors.update(p.author_id for p in ps)
        elif users:
            out.users.update(users)
    post_ids = [p.post_id for p in ps]
    parents = sorted({p.in_reply_to_id for p in ps if p.in_reply_to_id is not None})
    if parents:
        # Only a reply can be the parent others assumed was their root.
        await conn.execute(RECOUNT_REPLIES, parents)
        replies = [p.post_id for p in ps if p.in_reply_to_id is not None]
        # One pass moves descendants up one level; a run can hold a chain of replies whose
        # descendants were projected earlier, so repeat until nothing moves (bounded, in case
        # the log holds a reply cycle).
        for _ in range(MAX_REROOT_PASSES):
            status = await conn.execute(REROOT, replies)
            if status.endswith(" 0"):
                break
    if await conn.fetchval(POSTS_AFTER, post_ids):
        out.fanned += await _touch(conn, out, REPOST_FANOUT_BY_ORIGINAL, post_ids)


async def _restore_reposts(
    conn: asyncpg.Connection, out: Applied, removed: Sequence[asyncpg.Record]
) -> None:
    """After timeline rows went, let the earliest remaining repost of each original show."""
    if removed:
        out.fanned += await _touch(
            conn,
            out,
            RESTORE_REPOSTS,
            [r["user_id"] for r in removed],
            [r["original"] for r in removed],
        )


# The followers of wide authors, whose timelines a trim visits (trimmer.py).
FOLLOWERS_OF = (
    "SELECT array_agg(DISTINCT follower_id) FROM follows"
    " WHERE followee_id = ANY($1::bigint[]) AND active"
)


async def trim(
    conn: asyncpg.Connection, users: Iterable[int], authors: Iterable[int], timeline_cap: int
) -> int:
    """Cut the given users' timelines (and those of the authors' followers) back to the cap
    where they exceed cap * 1.25; returns the rows deleted."""
    status = await conn.execute(
        TRIM, sorted(set(users)), sorted(set(authors)), timeline_cap, timeline_cap * 5 // 4
    )
    return int(status.rsplit(" ", 1)[-1])
