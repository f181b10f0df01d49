"""The command side's PostgreSQL queries: accounts, post authorship, idempotency records.

Every function takes a connection that is already inside the command's transaction, so the
caller decides when it commits (only after the broker acknowledged the event).
"""

from __future__ import annotations

from typing import Final

import asyncpg
from msgspec import Struct

from services.command.decide import PostRecord, TargetFacts

IDEMPOTENCY_TTL_S: Final = 24 * 3600


class Credentials(Struct, frozen=True):
    user_id: int
    password_hash: str


class StoredAnswer(Struct, frozen=True):
    fingerprint: bytes
    status: int
    body: bytes


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
    row = await conn.fetchrow(
        """
        SELECT EXISTS (SELECT 1 FROM cmd_accounts WHERE user_id = $2) AS exists,
               $3::boolean AND EXISTS (
                   SELECT 1 FROM blocks
                   WHERE active
                     AND ((blocker_id = $1 AND blocked_id = $2)
                       OR (blocker_id = $2 AND blocked_id = $1))
               ) AS blocked
        """,
        actor_id,
        target_id,
        with_blocks,
    )
    assert row is not None
    return TargetFacts(exists=row["exists"], blocked_either_way=row["blocked"])


# ---------------------------------------------------------------- posts


async def insert_post(conn: asyncpg.Connection, post_id: int, author_id: int) -> None:
    await conn.execute(
        "INSERT INTO cmd_posts (post_id, author_id) VALUES ($1, $2)", post_id, author_id
    )


async def lock_post(conn: asyncpg.Connection, post_id: int) -> PostRecord | None:
    # FOR UPDATE: two concurrent deletes of one post queue here, and the second one sees
    # deleted = true, so exactly one post.deleted reaches the log.
    row = await conn.fetchrow(
        "SELECT author_id, deleted FROM cmd_posts WHERE post_id = $1 FOR UPDATE", post_id
    )
    return PostRecord(author_id=row["author_id"], deleted=row["deleted"]) if row else None


async def mark_post_deleted(conn: asyncpg.Connection, post_id: int) -> None:
    await conn.execute("UPDATE cmd_posts SET deleted = true WHERE post_id = $1", post_id)


# ---------------------------------------------------------------- idempotency


async def claim_idempotency_key(
    conn: asyncpg.Connection, scope: str, key: str
) -> StoredAnswer | None:
    """Serialise requests sharing (scope, key) and return the answer already stored, if fresh.

    The transaction-scoped advisory lock makes a concurrent duplicate wait until the first
    request commits or rolls back; it then finds the stored answer (READ COMMITTED takes a new
    snapshot per statement) or none, and proceeds alone. A hashtext collision between two
    different keys only serialises them needlessly. An expired record is removed so the key
    can be used afresh.
    """
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1 || chr(10) || $2))", scope, key)
    row = await conn.fetchrow(
        """
        SELECT fingerprint, status, body, created_at > now() - make_interval(secs => $3) AS fresh
        FROM cmd_idempotency WHERE scope = $1 AND key = $2
        """,
        scope,
        key,
        float(IDEMPOTENCY_TTL_S),
    )
    if row is None:
        return None
    if not row["fresh"]:
        await conn.execute("DELETE FROM cmd_idempotency WHERE scope = $1 AND key = $2", scope, key)
        return None
    return StoredAnswer(bytes(row["fingerprint"]), row["status"], bytes(row["body"]))


async def save_idempotency_key(
    conn: asyncpg.Connection, scope: str, key: str, answer: StoredAnswer
) -> None:
    await conn.execute(
        "INSERT INTO cmd_idempotency (scope, key, fingerprint, status, body)"
        " VALUES ($1, $2, $3, $4, $5)",
        scope,
        key,
        answer.fingerprint,
        answer.status,
        answer.body,
    )


async def purge_expired_keys(pool: asyncpg.Pool, batch: int = 10_000) -> int:
    """Delete one bounded batch of expired records; returns how many went."""
    result: str = await pool.execute(
        """
        DELETE FROM cmd_idempotency WHERE ctid = ANY (ARRAY(
            SELECT ctid FROM cmd_idempotency
            WHERE created_at < now() - make_interval(secs => $1)
            LIMIT $2))
        """,
        float(IDEMPOTENCY_TTL_S),
        batch,
    )
    return int(result.rsplit(" ", 1)[-1])
