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

from services.command import idempotency, store
from services.command.delivery import WIDE_AUTHORS, WideAuthors
from shared.db import create_pool, keep_session
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
# The authenticated actor's user id, set once the bearer token passed (not revoked).
ACTOR: Final = web.RequestKey("actor", int)

PURGE_INTERVAL_S: Final = 600.0


async def _purge_idempotency_keys(pool: asyncpg.Pool) -> None:
    """Keep the idempotency table to about a day of requests, and revoked tokens until they
    expire; several instances may all run it."""
    while True:
        await asyncio.sleep(PURGE_INTERVAL_S)
        try:
            deleted = 1
            while deleted:
                deleted = await idempotency.purge_expired_keys(pool)
            await store.purge_revoked_tokens(pool)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            log.warning("idempotency purge failed; will retry", exc_info=True)


RELAY_INTERVAL_S: Final = 15.0
WRITER_CLOSE_S: Final = 1.0
# post_batch.CONCURRENCY flushes in flight, plus the acknowledged keys' own delete.
WRITER_CONNECTIONS: Final = 3


async def _relay_pending(app: web.Application) -> None:
    """Publish events recorded by keyed commands whose clients never retried (pipeline.py)."""
    from services.command.pipeline import relay_pending  # pipeline imports this module

    while True:
        await asyncio.sleep(RELAY_INTERVAL_S)
        try:
            if relayed := await relay_pending(app):
                log.info("relayed the pending events of %d keyed commands", relayed)
        except Exception:
            log.warning("pending-event relay failed; will retry", exc_info=True)


async def resources(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    pool = await create_pool(settings.database_url)
    # The post writer's own connections: one per flush in flight plus its key clean-up. They
    # run one statement or one transaction at a time, so they skip the reset query on release
    # (shared.db.keep_session), a round trip per batch on the hot path.
    writer_pool = await create_pool(
        settings.database_url, min_size=1, max_size=WRITER_CONNECTIONS, reset=keep_session
    )
    producer = make_producer(settings)
    try:
        await producer.start()
    except BaseException:
        await writer_pool.close()
        await pool.close()
        raise
    app[POOL] = pool
    app[PRODUCER] = producer
    app[PUBLISHER] = EventPublisher(
        producer, settings.topic, settings.produce_timeout_s, lambda: make_producer(settings)
    )
    app[IDS] = SnowflakeGenerator(settings.worker_id)
    app[WIDE_AUTHORS] = WideAuthors(settings.pull_threshold)
    # Both import this module.
    from services.command.observability import METRICS
    from services.command.post_batch import POST_WRITER, PostWriter

    app[POST_WRITER] = PostWriter(
        writer_pool, app[PUBLISHER], app[METRICS], settings.produce_timeout_s
    )
    purger = asyncio.create_task(_purge_idempotency_keys(pool), name="idempotency-purge")
    relay = asyncio.create_task(_relay_pending(app), name="pending-relay")
    try:
        yield
    finally:
        for task in (purger, relay):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        # Handlers are done by now (aiohttp waited for them): a flush still running serves
        # none of them, and what it recorded the relay publishes after the restart.
        await app[POST_WRITER].close(WRITER_CLOSE_S)
        # stop() flushes what is still buffered; every request that got a 2xx was acked already.
        await app[PUBLISHER].stop()
        await writer_pool.close()
        await pool.close()
