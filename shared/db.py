"""PostgreSQL adapters: the connection pool and the migration runner."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Final, TypeAlias

import asyncpg

from shared.settings import REPO_ROOT

MIGRATIONS_DIR = REPO_ROOT / "schemas" / "sql"
# Any constant works; it only has to be the same for every process that migrates.
_MIGRATION_LOCK = 7_401_552_019

Reset: TypeAlias = Callable[[asyncpg.Connection], Awaitable[None]]

# Every service session runs without JIT compilation. The projector's batch statements are
# estimated far above jit_above_cost (100 K), so PostgreSQL compiled each one afresh: EXPLAIN
# ANALYZE of a 10,000-post INSERT_POSTS spent 450 ms of its 755 ms in JIT (237 ms optimizing,
# 192 ms emitting), for a plan whose rows are cheap to run interpreted. Nothing here is a
# long analytical query that compilation would pay back.
SESSION_SETTINGS: Final[dict[str, str]] = {"jit": "off"}  # copied into, never changed


async def connect_with_retry(dsn: str, timeout_s: float = 60.0) -> asyncpg.Connection:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        try:
            return await asyncpg.connect(dsn, server_settings=SESSION_SETTINGS)
        except (OSError, asyncpg.PostgresError):
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.3)


async def migrate(dsn: str, directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Apply the numbered .sql files not yet recorded, in order, each in its own transaction.

    An advisory lock serialises concurrent starters (three services start at once).
    """
    conn = await connect_with_retry(dsn)
    applied_now: list[str] = []
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["name"] for r in await conn.fetch("SELECT name FROM schema_migrations")}
        for path in sorted(directory.glob("*.sql")):
            if path.name in done:
                continue
            async with conn.transaction():
                await conn.execute(path.read_text())
                await conn.execute("INSERT INTO schema_migrations (name) VALUES ($1)", path.name)
            applied_now.append(path.name)
        await conn.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK)
    finally:
        await conn.close()
    return applied_now


async def keep_session(_conn: asyncpg.Connection) -> None:
    """A pool `reset` that skips asyncpg's default reset query (`SELECT pg_advisory_unlock_all();
    CLOSE ALL; UNLISTEN *; RESET ALL`): a full round trip per release, wasted on pools whose
    connections only run single statements and transactions, never SET (SET LOCAL ends with
    its transaction), LISTEN, cursors or session advisory locks. asyncpg still rolls back a
    transaction left open. The query service measured a tenth of its time in that query."""


async def create_pool(
    dsn: str, min_size: int = 2, max_size: int = 10, *, reset: Reset | None = None
) -> asyncpg.Pool:
    deadline = asyncio.get_running_loop().time() + 60
    while True:
        try:
            pool = await asyncpg.create_pool(
                dsn,
                min_size=min_size,
                max_size=max_size,
                reset=reset,
                server_settings=SESSION_SETTINGS,
            )
            assert pool is not None
            return pool
        except (OSError, asyncpg.PostgresError):
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.3)
