"""The command side's PostgreSQL queries about posts: the facts a post is decided on, the posts
themselves (one at a time, or a group-committed batch of new ones), reposts and likes.

Every function takes a connection that is already inside the command's transaction, so the
caller decides when it commits (only after the broker acknowledged the event), except
`record_new_posts`, which is one statement and its own transaction (post_batch.py).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from typing import Final

import asyncpg
import msgspec
from msgspec import Struct

from services.command.decide_posts import PostContext, PostRecord
from services.command.store import get_audience
from shared.events import Media, Mention
from shared.policy import Relations


class PriorAction(Struct, frozen=True):
    """The first answer to a repost or like, repeated to a client that asks again."""

    event_id: uuid.UUID
    position: str
    repost_id: int = 0


_media_decoder: Final = msgspec.json.Decoder(tuple[Media, ...])


# ---------------------------------------------------------------- facts


async def accounts_by_name(conn: asyncpg.Connection, names: Sequence[str]) -> dict[str, Mention]:
    """Existing accounts among `names` (any case), keyed by lower-cased username."""
    if not names:
        return {}
    rows = await conn.fetch(
        "SELECT user_id, username FROM cmd_accounts WHERE lower(username) = ANY ($1::text[])",
        [n.lower() for n in names],
    )
    return {
        r["username"].lower(): Mention(user_id=r["user_id"], username=r["username"]) for r in rows
    }


async def relations(
    conn: asyncpg.Connection, actor_id: int, users: Iterable[int], audiences: Iterable[int]
) -> Relations:
    """The actor's blocks and follows restricted to `users`, memberships to `audiences`.

    Blocks and follows come from the projector's read model (best-effort, may lag a moment);
    audience memberships from the command side, which is current.
    """
    users, audiences = sorted(set(users)), sorted(set(audiences))
    if not users and not audiences:
        return Relations()
    row = await conn.fetchrow(
        """
        SELECT
          ARRAY(SELECT CASE WHEN blocker_id = $1 THEN blocked_id ELSE blocker_id END FROM blocks
                WHERE active AND ((blocker_id = $1 AND blocked_id = ANY ($2::bigint[]))
                               OR (blocked_id = $1 AND blocker_id = ANY ($2::bigint[]))))
            AS blocked,
          ARRAY(SELECT followee_id FROM follows
                WHERE follower_id = $1 AND active AND followee_id = ANY ($2::bigint[]))
            AS following,
          ARRAY(SELECT audience_id FROM cmd_audience_members
                WHERE member_id = $1 AND audience_id = ANY ($3::bigint[])) AS audiences
        """,
        actor_id,
        users,
        audiences,
    )
    assert row is not None
    return Relations(
        blocked=frozenset(row["blocked"]),
        following=frozenset(row["following"]),
        audiences=frozenset(row["audiences"]),
    )


# ---------------------------------------------------------------- posts


async def insert_post(
    conn: asyncpg.Connection,
    post_id: int,
    author_id: int,
    *,
    visibility: str = "public",
    audience_id: int | None = None,
    mentions: Sequence[int] = (),
    media: Sequence[Media] = (),
) -> None:
    await conn.execute(
        "INSERT INTO cmd_posts (post_id, author_id, visibility, audience_id, mentions, media)"
        " VALUES ($1, $2, $3, $4, $5, $6::jsonb)",
        post_id,
        author_id,
        visibility,
        audience_id,
        list(mentions),
        msgspec.json.encode(media).decode(),
    )


class NewPostRow(Struct, frozen=True, kw_only=True):
    """A decided new post as the group commit records it: its command-side row, and its event
    pending under an internal idempotency key until the broker acknowledged it."""

    post_id: int
    author_id: int
    visibility: str
    audience_id: int | None
    mentions: tuple[int, ...]
    media: tuple[Media, ...]
    key: str
    body: bytes  # the answer with a placeholder position, which the relay fills in
    event: bytes  # the encoded post.created


def new_post_columns(rows: Sequence[NewPostRow]) -> tuple[list[object], ...]:
    """The rows as one array per column, for `unnest`: the batch becomes one statement.

    Mentions and media are ragged, so they travel as their text forms ('{1,2}' and JSON) and
    are cast back in SQL (a 2-D array would need every row to have as many mentions).
    """
    return (
        [r.post_id for r in rows],
        [r.author_id for r in rows],
        [r.visibility for r in rows],
        [r.audience_id for r in rows],
        ["{" + ",".join(map(str, r.mentions)) + "}" for r in rows],
        [msgspec.json.encode(r.media).decode() for r in rows],
        [r.key for r in rows],
        [r.body for r in rows],
        [r.event for r in rows],
    )


async def record_new_posts(
    conn: asyncpg.Connection, scope: str, rows: Sequence[NewPostRow], *, forget: Sequence[str] = ()
) -> None:
    """Insert the posts and their pending events in one statement, hence one transaction and
    one WAL flush for the whole batch; the same statement deletes the settled keys `forget`.
    Any bad row fails the whole statement."""
    await conn.execute(
        """
        WITH forgotten AS (
            DELETE FROM cmd_idempotency WHERE scope = $1 AND key = ANY ($11::text[])
        ), new_posts AS (
            INSERT INTO cmd_posts (post_id, author_id, visibility, audience_id, mentions, media)
            SELECT p, a, v, au, m::bigint[], md::jsonb
            FROM unnest($2::bigint[], $3::bigint[], $4::text[], $5::bigint[], $6::text[],
                        $7::text[]) AS t(p, a, v, au, m, md)
        )
        INSERT INTO cmd_idempotency (scope, key, fingerprint, status, body, pending_events)
        SELECT $1, k, ''::bytea, 202, b, ARRAY[e]
        FROM unnest($8::text[], $9::bytea[], $10::bytea[]) AS t(k, b, e)
        """,
        scope,
        *new_post_columns(rows),
        list(forget),
    )


async def update_post_content(
    conn: asyncpg.Connection, post_id: int, mentions: Sequence[int], media: Sequence[Media]
) -> None:
    await conn.execute(
        "UPDATE cmd_posts SET mentions = $2, media = $3::jsonb WHERE post_id = $1",
        post_id,
        list(mentions),
        msgspec.json.encode(media).decode(),
    )


def _post(row: asyncpg.Record) -> PostRecord:
    return PostRecord(
        author_id=row["author_id"],
        deleted=row["deleted"],
        visibility=row["visibility"],
        audience_id=row["audience_id"],
        mentions=frozenset(row["mentions"]),
        media=_media_decoder.decode(row["media"]),
    )


_POST_COLUMNS: Final = "author_id, deleted, visibility, audience_id, mentions, media::text AS media"


async def get_post(conn: asyncpg.Connection, post_id: int) -> PostRecord | None:
    row = await conn.fetchrow(f"SELECT {_POST_COLUMNS} FROM cmd_posts WHERE post_id = $1", post_id)
    return _post(row) if row else None


async def lock_post(conn: asyncpg.Connection, post_id: int) -> PostRecord | None:
    # FOR UPDATE: two concurrent deletes (or an edit and a delete) of one post queue here, and
    # the second one sees deleted = true, so exactly one post.deleted reaches the log.
    row = await conn.fetchrow(
        f"SELECT {_POST_COLUMNS} FROM cmd_posts WHERE post_id = $1 FOR UPDATE", post_id
    )
    return _post(row) if row else None


async def post_context(
    conn: asyncpg.Connection,
    actor_id: int,
    *,
    audience_id: int | None = None,
    in_reply_to_id: int | None = None,
    quote_of_id: int | None = None,
    mention_names: Sequence[str] = (),
) -> PostContext:
    """Every fact a new post or an edit is decided on, in a few primary-key lookups."""
    audience = await get_audience(conn, audience_id) if audience_id is not None else None
    reply_to = await get_post(conn, in_reply_to_id) if in_reply_to_id is not None else None
    quote_of = await get_post(conn, quote_of_id) if quote_of_id is not None else None
    accounts = await accounts_by_name(conn, mention_names)
    targets = [p for p in (reply_to, quote_of) if p is not None]
    rel = await relations(
        conn,
        actor_id,
        [p.author_id for p in targets] + [m.user_id for m in accounts.values()],
        [p.audience_id for p in targets if p.audience_id is not None],
    )
    return PostContext(
        audience=audience, reply_to=reply_to, quote_of=quote_of, accounts=accounts, relations=rel
    )


async def mark_post_deleted(conn: asyncpg.Connection, post_id: int) -> None:
    await conn.execute("UPDATE cmd_posts SET deleted = true WHERE post_id = $1", post_id)


# ---------------------------------------------------------------- reposts and likes


async def find_repost(conn: asyncpg.Connection, post_id: int, user_id: int) -> PriorAction | None:
    row = await conn.fetchrow(
        "SELECT repost_id, event_id, position FROM cmd_reposts"
        " WHERE post_id = $1 AND reposter_id = $2",
        post_id,
        user_id,
    )
    return PriorAction(row["event_id"], row["position"], row["repost_id"]) if row else None


async def claim_repost(
    conn: asyncpg.Connection, post_id: int, user_id: int, repost_id: int, event_id: uuid.UUID
) -> bool:
    """Insert the repost row; False when a concurrent request's row won (the unique key waits
    for that transaction, so the loser sees it committed)."""
    inserted = await conn.fetchval(
        "INSERT INTO cmd_reposts (post_id, reposter_id, repost_id, event_id)"
        " VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING RETURNING true",
        post_id,
        user_id,
        repost_id,
        event_id,
    )
    return bool(inserted)


async def set_repost_position(
    conn: asyncpg.Connection, post_id: int, user_id: int, position: str
) -> None:
    await conn.execute(
        "UPDATE cmd_reposts SET position = $3 WHERE post_id = $1 AND reposter_id = $2",
        post_id,
        user_id,
        position,
    )


async def delete_repost(conn: asyncpg.Connection, post_id: int, user_id: int) -> int | None:
    """The removed repost's id, or None when there was none."""
    repost_id: int | None = await conn.fetchval(
        "DELETE FROM cmd_reposts WHERE post_id = $1 AND reposter_id = $2 RETURNING repost_id",
        post_id,
        user_id,
    )
    return repost_id


async def find_like(conn: asyncpg.Connection, post_id: int, user_id: int) -> PriorAction | None:
    row = await conn.fetchrow(
        "SELECT event_id, position FROM cmd_likes WHERE post_id = $1 AND user_id = $2",
        post_id,
        user_id,
    )
    return PriorAction(row["event_id"], row["position"]) if row else None


async def claim_like(
    conn: asyncpg.Connection, post_id: int, user_id: int, event_id: uuid.UUID
) -> bool:
    inserted = await conn.fetchval(
        "INSERT INTO cmd_likes (post_id, user_id, event_id) VALUES ($1, $2, $3)"
        " ON CONFLICT DO NOTHING RETURNING true",
        post_id,
        user_id,
        event_id,
    )
    return bool(inserted)


async def set_like_position(
    conn: asyncpg.Connection, post_id: int, user_id: int, position: str
) -> None:
    await conn.execute(
        "UPDATE cmd_likes SET position = $3 WHERE post_id = $1 AND user_id = $2",
        post_id,
        user_id,
        position,
    )


async def delete_like(conn: asyncpg.Connection, post_id: int, user_id: int) -> bool:
    deleted = await conn.fetchval(
        "DELETE FROM cmd_likes WHERE post_id = $1 AND user_id = $2 RETURNING true",
        post_id,
        user_id,
    )
    return bool(deleted)
