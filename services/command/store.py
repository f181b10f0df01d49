"""The command side's PostgreSQL queries: accounts, follow requests, audiences and revoked
tokens (posts, reposts and likes live in post_store.py, idempotency records in idempotency.py).

Every function takes a connection that is already inside the command's transaction, so the
caller decides when it commits (only after the broker acknowledged the event).
"""

from __future__ import annotations

from datetime import datetime

import asyncpg
from msgspec import Struct

from services.command.decide import AudienceRecord, TargetFacts


class Credentials(Struct, frozen=True):
    user_id: int
    password_hash: str


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
    if "\x00" in username:
        return None  # PostgreSQL text can't hold NUL, and no username contains one
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


async def take_follow_requests_to(conn: asyncpg.Connection, followee_id: int) -> list[int]:
    """Remove every request pending for `followee_id`; the followers who asked, by id."""
    rows = await conn.fetch(
        "DELETE FROM cmd_follow_requests WHERE followee_id = $1 RETURNING follower_id",
        followee_id,
    )
    return sorted(r["follower_id"] for r in rows)


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
