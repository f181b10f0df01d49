"""The read-your-writes waiter's NOTIFY path: a projector's notification on `projector_progress`
ends a wait at once instead of after the polling back-off."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import asyncpg
import pytest
import pytest_asyncio

from services.query.consistency import CHANNEL, ProgressWaiter
from shared.db import create_pool
from shared.kafka import Position
from shared.listener import Listener
from shared.settings import Settings
from tests.infra import unique_name

pytestmark = pytest.mark.integration


@pytest_asyncio.fixture
async def pool(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(settings.database_url, min_size=1, max_size=2)
    try:
        yield pool
    finally:
        await pool.close()


async def _listening(db: asyncpg.Connection, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        listening = await db.fetchval(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND query = $1",
            f'LISTEN "{CHANNEL}"',
        )
        if listening:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the waiter never started listening")


async def _advance(db: asyncpg.Connection, topic: str, next_offset: int, payload: str) -> None:
    async with db.transaction():
        await db.execute(
            "UPDATE projector_offsets SET next_offset = $2 WHERE topic = $1 AND partition = 2",
            topic,
            next_offset,
        )
        await db.execute("SELECT pg_notify($1, $2)", CHANNEL, payload)


async def test_notify_wakes_the_waiter_before_its_next_poll(
    pool: asyncpg.Pool, db: asyncpg.Connection, settings: Settings
) -> None:
    topic = unique_name("notify_events")
    # Polls so rare that only the notification can end the wait in time.
    waiter = ProgressWaiter(pool, topic, first_delay_s=30, max_delay_s=30)
    listener = Listener(settings.database_url)
    listener.on(CHANNEL, waiter.notified, waiter.wake_all)
    listener.start()
    try:
        await _listening(db)
        await db.execute(
            "INSERT INTO projector_offsets (topic, partition, next_offset) VALUES ($1, 2, 1)",
            topic,
        )
        waiting = asyncio.create_task(waiter.passed(Position(2, 5), timeout_s=60))
        await asyncio.sleep(0.2)
        assert not waiting.done()

        # Another topic's progress, or other partitions', does not end the wait.
        await db.execute("SELECT pg_notify($1, $2)", CHANNEL, f"{topic}x:2:9")
        await db.execute("SELECT pg_notify($1, $2)", CHANNEL, "1:9,3:4")
        await asyncio.sleep(0.2)
        assert not waiting.done()

        # What the projector does: advance the offsets and notify in one transaction, with
        # "<partition>:<next_offset>" items for its own topic.
        await _advance(db, topic, 6, "0:3,2:6")
        assert await asyncio.wait_for(waiting, 1.0) is True

        # Items may also name the topic.
        waiting = asyncio.create_task(waiter.passed(Position(2, 6), timeout_s=60))
        await asyncio.sleep(0.1)
        await _advance(db, topic, 7, f"{topic}:2:7")
        assert await asyncio.wait_for(waiting, 1.0) is True
    finally:
        await listener.stop()


async def test_without_notify_polling_still_answers(
    pool: asyncpg.Pool, db: asyncpg.Connection, settings: Settings
) -> None:
    topic = unique_name("poll_events")
    waiter = ProgressWaiter(pool, topic)  # no Listener: polling only
    assert await waiter.passed(Position(0, 0), timeout_s=0.2) is False
    await db.execute(
        "INSERT INTO projector_offsets (topic, partition, next_offset) VALUES ($1, 0, 1)", topic
    )
    assert await waiter.passed(Position(0, 0), timeout_s=0.2) is True
