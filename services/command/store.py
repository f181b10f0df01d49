"""The command side's PostgreSQL queries: accounts, posts, reposts, likes, follow requests,
audiences and revoked tokens (idempotency records live in idempotency.py).

Every function takes a connection that is already inside the command's transaction, so the
caller decides when it commits (only after the broker acknowledged the event).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Final

import asyncpg
import msgspec
from msgspec import Struct

from services.command.decide import AudienceRecord, TargetFacts
from services.command.decide_posts import PostContext, PostRecord
from shared.events import Media, Mention
from shared.policy import Relations


class Credentials(Struct, frozen=True):
    user_id: int
    password_hash: str


class PriorAction(Struct, frozen=True):
    """The first answer to a repost or like, repeated to a client that asks again."""

    event_id: uuid.UUID
    position: str
    repost_id: int = 0


_media_decoder: Final = msgspec.json.Decoder(tuple[Media, ...])


# ---------------------------------------------------------------- accounts


async def username_taken(conn: asyncpg.Connection, username: str) -> bool:
    return bool(
        await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM cmd_accounts WHERE lower(username) = lower($1))",
            username,
        )
    )


async def insert_account(
    conn: asyncpg.Connection, user_id: int, username: str, password_hash: str
) -> None:
    """Raises asyncpg.UniqueViolationError when a concurrent request took the name first."""
    await conn.execute(
        "INSERT INTO cmd_accounts (user_id, username, password_hash) VALUES ($1, $2, $3)",
        user_id,
        username,
        password_hash,
    )


async def find_credentials(conn: asyncpg.Connection, username: str) -> Credentials | None:
    row = await conn.fetchrow(
        "SELECT user_id, password_hash FROM cmd_accounts WHERE lower(username) = lower($1)",
        username,
    )
    return Credentials(row["user_id"], row["password_hash"]) if row else None


async def target_facts(
    conn: asyncpg.Connection, actor_id: int, target_id: int, *, with_blocks: bool
) -> TargetFacts:
    # `locked` is command-side (written with profile.updated); `following` comes from the read
    # model and only decides whether a locked account's follower is asked to request again.
    row = await conn.fetchrow(
        """
        SELECT a.user_id IS NOT NULL AS exists, coalesce(a.locked, false) AS locked,
               $3::boolean AND EXISTS (
                   SELECT 1 FROM blocks
                   WHERE active
                     AND ((blocker_id = $1 AND blocked_id = $2)
                       OR (blocker_id = $2 AND blocked_id = $1))
               ) AS blocked,
               EXISTS (SELECT 1 FROM follows
                       WHERE follower_id = $1 AND followee_id = $2 AND active) AS following
        FROM (SELECT 1) AS one LEFT JOIN cmd_accounts a ON a.user_id = $2
        """,
        actor_id,
        target_id,
        with_blocks,
    )
    assert row is not None
    return TargetFacts(
        exists=row["exists"],
        blocked_either_way=row["blocked"],
        locked=row["locked"],
        following=row["following"],
    )


async def user_exists(conn: asyncpg.Connection, user_id: int) -> bool:
    return bool(
        await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM cmd_accounts WHERE user_id = $1)", user_id
        )
    )


async def set_locked(conn: asyncpg.Connection, user_id: int, locked: bool) -> None:
    await conn.execute("UPDATE cmd_accounts SET locked = $2 WHERE user_id = $1", user_id, locked)


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


# ---------------------------------------------------------------- follow requests


async def add_follow_request(conn: asyncpg.Connection, follower_id: int, followee_id: int) -> None:
    await conn.execute(
        "INSERT INTO cmd_follow_requests (follower_id, followee_id) VALUES ($1, $2)"
        " ON CONFLICT DO NOTHING",
        follower_id,
        followee_id,
    )


async def take_follow_request(conn: asyncpg.Connection, follower_id: int, followee_id: int) -> bool:
    """Remove a pending request; whether there was one."""
    deleted = await conn.fetchval(
        "DELETE FROM cmd_follow_requests WHERE follower_id = $1 AND followee_id = $2"
        " RETURNING true",
        follower_id,
        followee_id,
    )
    return bool(deleted)


async def drop_follow_requests_between(conn: asyncpg.Connection, a: int, b: int) -> None:
    # A block ends pending requests in both directions (semantics.md).
    await conn.execute(
        "DELETE FROM cmd_follow_requests WHERE (follower_id = $1 AND followee_id = $2)"
        " OR (follower_id = $2 AND followee_id = $1)",
        a,
        b,
    )


# ---------------------------------------------------------------- audiences


async def insert_audience(
    conn: asyncpg.Connection, audience_id: int, owner_id: int, name: str
) -> None:
    await conn.execute(
        "INSERT INTO cmd_audiences (audience_id, owner_id, name) VALUES ($1, $2, $3)",
        audience_id,
        owner_id,
        name,
    )


async def get_audience(
    conn: asyncpg.Connection, audience_id: int, *, lock: bool = False
) -> AudienceRecord | None:
    row = await conn.fetchrow(
        "SELECT owner_id, name, deleted FROM cmd_audiences WHERE audience_id = $1"
        + (" FOR UPDATE" if lock else ""),
        audience_id,
    )
    if row is None:
        return None
    return AudienceRecord(owner_id=row["owner_id"], deleted=row["deleted"], name=row["name"])


async def mark_audience_deleted(conn: asyncpg.Connection, audience_id: int) -> None:
    await conn.execute(
        "UPDATE cmd_audiences SET deleted = true WHERE audience_id = $1", audience_id
    )
    await conn.execute("DELETE FROM cmd_audience_members WHERE audience_id = $1", audience_id)


async def add_audience_member(conn: asyncpg.Connection, audience_id: int, member_id: int) -> None:
    await conn.execute(
        "INSERT INTO cmd_audience_members (audience_id, member_id) VALUES ($1, $2)"
        " ON CONFLICT DO NOTHING",
        audience_id,
        member_id,
    )


async def remove_audience_member(
    conn: asyncpg.Connection, audience_id: int, member_id: int
) -> bool:
    deleted = await conn.fetchval(
        "DELETE FROM cmd_audience_members WHERE audience_id = $1 AND member_id = $2 RETURNING true",
        audience_id,
        member_id,
    )
    return bool(deleted)


async def is_audience_member(conn: asyncpg.Connection, audience_id: int, member_id: int) -> bool:
    return bool(
        await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM cmd_audience_members"
            " WHERE audience_id = $1 AND member_id = $2)",
            audience_id,
            member_id,
        )
    )


# ---------------------------------------------------------------- sessions


async def revoke_token(conn: asyncpg.Connection, nonce: str, expires_at: datetime) -> None:
    await conn.execute(
        "INSERT INTO cmd_revoked_tokens (nonce, expires_at) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        nonce,
        expires_at,
    )


async def purge_revoked_tokens(pool: asyncpg.Pool) -> int:
    """Forget revocations of tokens that have expired anyway (they fail verification)."""
    result: str = await pool.execute("DELETE FROM cmd_revoked_tokens WHERE expires_at < now()")
    return int(result.rsplit(" ", 1)[-1])
