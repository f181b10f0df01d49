"""The command side's idempotency records (schemas/sql/010 and 012): answers to keyed requests,
and the events a POST decided but the broker has not acknowledged yet (pipeline.py).

Every function takes a connection already inside the caller's transaction, or the pool for the
background purge and relay.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Final

import asyncpg
from msgspec import Struct

IDEMPOTENCY_TTL_S: Final = 24 * 3600
# Scope of the keys the pipeline makes up for POSTs sent without an Idempotency-Key: they only
# hold the decided events until the broker acknowledged them (pipeline.py, post_batch.py).
INTERNAL_SCOPE: Final = "internal"


class StoredAnswer(Struct, frozen=True):
    fingerprint: bytes
    status: int
    body: bytes
    # Encoded events decided but not yet acknowledged by the broker (see 012_*.sql).
    pending_events: tuple[bytes, ...] = ()


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
        SELECT fingerprint, status, body, pending_events,
               created_at > now() - make_interval(secs => $3) AS fresh
        FROM cmd_idempotency WHERE scope = $1 AND key = $2
        """,
        scope,
        key,
        float(IDEMPOTENCY_TTL_S),
    )
    if row is None:
        return None
    pending = tuple(bytes(e) for e in row["pending_events"] or ())
    if not row["fresh"] and not pending:
        await conn.execute("DELETE FROM cmd_idempotency WHERE scope = $1 AND key = $2", scope, key)
        return None
    return StoredAnswer(bytes(row["fingerprint"]), row["status"], bytes(row["body"]), pending)


@contextlib.asynccontextmanager
async def hold_key(conn: asyncpg.Connection, scope: str, key: str) -> AsyncIterator[None]:
    """Hold (scope, key) from the claim until the answer is settled, across the commit.

    The record commits before its events are produced, which ends the claim's transaction
    lock; without this session lock a concurrent duplicate would find the events pending and
    publish them a second time while the first request is still waiting for the ack. It takes
    the same lock as `claim_idempotency_key`, so duplicates and the relay wait here instead.
    A crash drops the session, and with it the lock; so does returning the connection to the
    pool (asyncpg's reset unlocks all), should the unlock itself fail.
    """
    await conn.execute("SELECT pg_advisory_lock(hashtext($1 || chr(10) || $2))", scope, key)
    try:
        yield
    finally:
        await conn.execute("SELECT pg_advisory_unlock(hashtext($1 || chr(10) || $2))", scope, key)


async def save_idempotency_key(
    conn: asyncpg.Connection, scope: str, key: str, answer: StoredAnswer
) -> None:
    await conn.execute(
        "INSERT INTO cmd_idempotency (scope, key, fingerprint, status, body, pending_events)"
        " VALUES ($1, $2, $3, $4, $5, $6)",
        scope,
        key,
        answer.fingerprint,
        answer.status,
        answer.body,
        list(answer.pending_events) or None,
    )


async def settle_idempotency_key(
    conn: asyncpg.Connection | asyncpg.Pool, scope: str, key: str, body: bytes
) -> None:
    """The pending events were acknowledged: store the final answer, drop the events."""
    await conn.execute(
        "UPDATE cmd_idempotency SET body = $3, pending_events = NULL WHERE scope = $1 AND key = $2",
        scope,
        key,
        body,
    )


async def forget_idempotency_key(conn: asyncpg.Connection, scope: str, key: str) -> None:
    await conn.execute("DELETE FROM cmd_idempotency WHERE scope = $1 AND key = $2", scope, key)


async def forget_acknowledged(pool: asyncpg.Pool, scope: str, keys: list[str]) -> None:
    """Drop records whose events the broker acknowledged, without waiting for the WAL flush.

    synchronous_commit off is safe here, and only here: a delete that a PostgreSQL crash loses
    leaves a pending record, which the relay publishes again (the same event id, which every
    projection absorbs). Nothing is lost or decided twice; the flush wait is saved per batch.
    """
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL synchronous_commit = off")
        await conn.execute(
            "DELETE FROM cmd_idempotency WHERE scope = $1 AND key = ANY ($2::text[])", scope, keys
        )


async def stale_pending_keys(pool: asyncpg.Pool, older_than_s: float) -> list[tuple[str, str]]:
    rows = await pool.fetch(
        "SELECT scope, key FROM cmd_idempotency WHERE pending_events IS NOT NULL"
        " AND created_at < now() - make_interval(secs => $1) ORDER BY created_at LIMIT 500",
        older_than_s,
    )
    return [(r["scope"], r["key"]) for r in rows]


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
