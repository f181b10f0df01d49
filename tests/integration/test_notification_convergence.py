"""Notifications around a block that was lifted converge whatever order partitions are
projected in (invariant 4): the projector cannot tell, while a block stands, whether an unblock
it has not seen yet came before a notification's event, so the notification is kept (reads
hide it while the block stands) and the unblock removes it only if it came later. The reference
model found the order block, follow, unblock dropping a follow notification for good. Mutes
work the same way."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from services.query import stream_reads
from shared.events import (
    BlockData,
    BlockRemoved,
    FollowRequested,
    MuteCreated,
    MuteData,
    MuteRemoved,
    new_event,
)
from shared.settings import Settings
from tests.integration.test_projector_domain import (
    block,
    converge,
    feeder,
    follow,
    mention,
    n,
    notes,
    pool,
    post,
    readable,
    user,
)

pytestmark = pytest.mark.integration

__all__ = ["pool"]  # the fixture, re-used


def unblock(a: int, b: int) -> Any:
    return new_event(BlockRemoved, actor_id=a, data=BlockData(blocker_id=a, blocked_id=b))


async def test_a_follow_after_an_unblock_notifies_in_any_order(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    def make() -> Any:
        a, b = n(), n()
        # Command order: a blocks b, lifts it, then b follows a.
        return [block(a, b), unblock(a, b), follow(b, a)], [a, b], []

    await converge(settings, pool, make)
    f = await feeder(settings, pool)
    a, b = n(), n()
    await f.batch(user(a), user(b))
    blocked, lifted, followed = block(a, b), unblock(a, b), follow(b, a)
    await f.each(blocked, followed)  # the unblock, earlier than the follow, comes late
    assert await notes(pool, a) == [("follow", b)]
    assert await readable(pool, a) == []  # the block stands as far as anyone can tell
    await f.batch(lifted)
    assert await readable(pool, a) == [("follow", b)]


async def test_a_mention_during_a_block_goes_when_the_later_unblock_arrives(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    def make() -> Any:
        a, b = n(), n()
        # Command order: a blocks b, b mentions a (a broken or raced log: the command side
        # drops mentions across a block), a lifts the block.
        blocked = block(a, b)
        p = post(b, mentions=(mention(a),))
        return [blocked, p, unblock(a, b)], [a, b], [p]

    await converge(settings, pool, make)
    f = await feeder(settings, pool)
    a, b = n(), n()
    blocked, p, lifted = block(a, b), post(b, mentions=(mention(a),)), unblock(a, b)
    await f.each(blocked, p)
    assert await notes(pool, a) == [("mention", b)]  # kept while the block stands
    await f.batch(lifted)
    assert await notes(pool, a) == []  # the block stood when b mentioned a


def mute(a: int, b: int, kind: type[Any] = MuteCreated, expires_at: datetime | None = None) -> Any:
    return new_event(kind, actor_id=a, data=MuteData(muter_id=a, muted_id=b, expires_at=expires_at))


async def test_mutes_lifted_before_or_after_a_mention_converge(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    # Events are made in command order: their ids (UUIDv7) say when each happened.
    def after_unmute() -> Any:
        a, b = n(), n()
        muted, lifted = mute(a, b), mute(a, b, MuteRemoved)
        p = post(b, mentions=(mention(a),))
        return [muted, lifted, user(a), user(b), p], [a, b], [p]

    def during_mute() -> Any:
        a, b = n(), n()
        muted = mute(a, b)
        p = post(b, mentions=(mention(a),))
        return [muted, user(a), user(b), p, mute(a, b, MuteRemoved)], [a, b], [p]

    await converge(settings, pool, after_unmute, limit=24)
    await converge(settings, pool, during_mute, limit=24)
    f = await feeder(settings, pool)
    for make, expected in ((after_unmute, True), (during_mute, False)):
        events, (a, b), _ = make()
        await f.each(*events)
        assert await readable(pool, a) == ([("mention", b)] if expected else [])


# A mute with an expiry hides what happened before it ran out, in every projection order; what
# happened after shows, though the mute is still on record (nobody unmuted).
MUTE_FOR = timedelta(milliseconds=40)


async def test_a_mute_that_ran_out_hides_only_what_came_before(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    def scenario(mention_after_expiry: bool, unmuted: bool) -> Any:
        a, b = n(), n()
        muted = mute(a, b, expires_at=datetime.now(UTC) + MUTE_FOR)
        if mention_after_expiry:
            time.sleep(MUTE_FOR.total_seconds() * 2)
        p = post(b, mentions=(mention(a),))
        assert (p.time > muted.data.expires_at) is mention_after_expiry
        # An unmute after it ran out ends that mute's period, which the mention was not in.
        lifted = [mute(a, b, MuteRemoved)] if unmuted else []
        return [user(a), user(b), muted, p, *lifted], [a, b], [p]

    for after, unmuted in ((True, False), (False, False), (True, True)):

        def make(after: bool = after, unmuted: bool = unmuted) -> Any:
            return scenario(after, unmuted)

        await converge(settings, pool, make, limit=30)
        f = await feeder(settings, pool)
        events, (a, b), _ = make()
        await f.each(*reversed(events))  # the mention before the mute, the worst case
        await asyncio.sleep(MUTE_FOR.total_seconds() * 2)  # either way, it has run out now
        assert await readable(pool, a) == ([("mention", b)] if after else [])


async def test_a_request_asked_again_shows_once(settings: Settings, pool: asyncpg.Pool) -> None:
    f = await feeder(settings, pool)
    a, b = n(), n()
    await f.batch(user(a), user(b))
    await f.each(follow(a, b, FollowRequested), again := follow(a, b, FollowRequested))
    shown = await stream_reads.notifications(pool, b, stream_reads.UUID_MAX, uuid.UUID(int=0), 9)
    assert [(r["kind"], r["event_id"]) for r in shown] == [("follow_request", again.id)]
