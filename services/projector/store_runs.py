"""Applies the set-based runs of registrations and follow-register writes (runs.merge),
inside the caller's transaction: a few statements per run, whatever its length.

A run of follow writes has one write per pair (runs.latest_follows). Every register is
written first; then each pair's follower timeline is reconciled with the register's *current*
state (an older write arriving late must not undo a newer one): the rows of unfollowed accounts
go (and reposts they hid come back), then active follows merge the followee's recent posts and
reposts. The statements see each other's rows, so the end state is the one the writes applied
one by one would leave (invariant 4: timelines do not depend on the order of follow changes).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import asyncpg

from services.projector.project import SetFollow, UpsertUser
from services.projector.sql_posts import UPSERT_USER
from services.projector.sql_relations import (
    END_REQUESTS,
    FOLLOWS_STATE,
    MERGE_RECENT,
    MERGE_REPOSTS,
    REMOVE_AUTHORS,
    RESTORE_REPOSTS,
    UPSERT_FOLLOWS,
)

if TYPE_CHECKING:  # store imports this module; Applied only types the argument here
    from services.projector.store import Applied


async def upsert_users(conn: asyncpg.Connection, users: Sequence[UpsertUser]) -> None:
    if users:
        await conn.execute(
            UPSERT_USER,
            [u.user_id for u in users],
            [u.username for u in users],
            [u.display_name for u in users],
            [u.created_at for u in users],
        )


async def set_follows(
    conn: asyncpg.Connection, out: Applied, writes: Sequence[SetFollow], timeline_cap: int
) -> None:
    """Write the registers (one write per pair), end older requests, reconcile timelines."""
    if not writes:
        return
    followers = [w.follower_id for w in writes]
    followees = [w.followee_id for w in writes]
    versions = [w.version for w in writes]
    await conn.execute(
        UPSERT_FOLLOWS,
        followers,
        followees,
        [w.active for w in writes],
        versions,
        [w.at for w in writes],
    )
    out.touch(await conn.fetchrow(END_REQUESTS, followers, followees, versions))
    on: list[tuple[int, int]] = []
    off: list[tuple[int, int]] = []
    for row in await conn.fetch(FOLLOWS_STATE, followers, followees):
        (on if row["active"] else off).append((row["follower_id"], row["followee_id"]))
    if off:
        removed = await conn.fetch(REMOVE_AUTHORS, [a for a, _ in off], [b for _, b in off])
        out.users.update(r["user_id"] for r in removed)
        if removed:
            out.fanned += out.touch(
                await conn.fetchrow(
                    RESTORE_REPOSTS,
                    [r["user_id"] for r in removed],
                    [r["original"] for r in removed],
                )
            )
    if on:
        pairs = ([a for a, _ in on], [b for _, b in on], timeline_cap)
        out.fanned += out.touch(await conn.fetchrow(MERGE_RECENT, *pairs))
        out.fanned += out.touch(await conn.fetchrow(MERGE_REPOSTS, *pairs))
