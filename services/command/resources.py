"""What the command service holds for its lifetime, owned by the aiohttp app.

Resources are created in a cleanup context and reached through typed keys, never globals, so a
test can run several apps side by side against different databases and topics.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Final

import asyncpg
from aiohttp import web
from aiokafka import AIOKafkaProducer

from services.command import store
from shared.db import create_pool
from shared.ids import SnowflakeGenerator
from shared.kafka import EventPublisher, make_producer
from shared.settings import Settings

log = logging.getLogger("microblog.command")

SETTINGS: Final = web.AppKey("settings", Settings)
POOL: Final = web.AppKey("pool", asyncpg.Pool)
PRODUCER: Final = web.AppKey("producer", AIOKafkaProducer)
PUBLISHER: Final = web.AppKey("publisher", EventPublisher)
IDS: Final = web.AppKey("ids", SnowflakeGenerator)
REQUEST_ID: Final = web.RequestKey("request_id", str)

PURGE_INTERVAL_S: Final = 600.0


async def _purge_idempotency_keys(pool: asyncpg.Pool) -> None:
    """Keep the idempotency table to about a day of requests; several instances may all run it."""
    while True:
        await asyncio.sleep(PURGE_INTERVAL_S)
        try:
            deleted = 1
            while deleted:
                deleted = await store.purge_expired_keys(pool)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            log.warning("idempotency purge failed; will retry", exc_info=True)


async def resources(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    pool = await create_pool(settings.database_url)
    producer = make_producer(settings)
    try:
        await producer.start()
    except BaseException:
        await pool.close()
        raise
    app[POOL] = pool
    app[PRODUCER] = producer
    app[PUBLISHER] = EventPublisher(producer, settings.topic, settings.produce_timeout_s)
    app[IDS] = SnowflakeGenerator(settings.worker_id)
    purger = asyncio.create_task(_purge_idempotency_keys(pool), name="idempotency-purge")
    try:
        yield
    finally:
        purger.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await purger
        # stop() flushes what is still buffered; every request that got a 2xx was acked already.
        await producer.stop()
        await pool.close()
