"""Composition of the query service's web application: routes, middlewares, resources."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from typing import Any, Final

import asyncpg
from aiohttp import web

from services.query import accounts, handlers, notifications, openapi, repository, streaming
from services.query.consistency import CHANNEL as CONSISTENCY_CHANNEL
from services.query.consistency import ProgressWaiter
from services.query.handlers import HOME_READS, METRICS, POOL, SETTINGS, WAITER
from services.query.home_reads import HomeReads
from services.query.metrics import QueryMetrics
from services.query.pull_state import PULL_AUTHORS, PullAuthors
from services.query.streaming import CHANNEL as STREAM_CHANNEL
from services.query.streaming import STREAM_HUB, StreamHub
from shared.db import SESSION_SETTINGS, keep_session
from shared.http import ApiError, error_middleware, healthz
from shared.listener import Listener
from shared.openapi import handler as openapi_handler
from shared.ratelimit import RateLimits, make_rate_limit_middleware
from shared.revocations import REVOCATIONS, Revocations
from shared.settings import Settings

log = logging.getLogger("microblog.query")

# Bounds that turn "PostgreSQL is gone or stuck" into a prompt 503 instead of a hang: a new
# connection must be up within CONNECT_TIMEOUT_S and a statement must finish within
# STATEMENT_TIMEOUT_S (both far above a healthy read's few milliseconds).
CONNECT_TIMEOUT_S: Final = 3.0
STATEMENT_TIMEOUT_S: Final = 5.0
# Connections per process (MB_QUERY_POOL_MAX). Few beat many when PostgreSQL shares 2 cores:
# home reads, closed loop, 32 in flight, small bench data: 2 → 443, 4 → 627/558/572,
# 6 → 468, 10 → 532/467 req/s. Requests queue for a connection in the pool rather than as
# runnable backends fighting for the same cores.
POOL_MAX: Final = 4
POOL_MAX_ENV: Final = "MB_QUERY_POOL_MAX"
# Request-size caps beyond aiohttp's own (8 KiB per line and header): a query string or a
# header block larger than these is abuse, not a client we want to serve.
MAX_QUERY_STRING: Final = 4096
MAX_HEADER_BYTES: Final = 16 * 1024


@web.middleware
async def database_unavailable_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """PostgreSQL down answers 503 problem+json; the pool reconnects on its own afterwards
    (a broken connection is discarded and the next acquire opens a fresh one)."""
    try:
        return await handler(request)  # type: ignore[no-any-return]
    except repository.UNAVAILABLE as exc:
        log.warning("PostgreSQL unavailable on %s %s: %r", request.method, request.path, exc)
        raise ApiError(
            503, "database_unavailable", "the read store is unavailable; retry"
        ) from None


@web.middleware
async def request_caps_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    if len(request.query_string) > MAX_QUERY_STRING:
        raise ApiError(
            414, "query_too_long", f"query string over {MAX_QUERY_STRING} bytes", "query"
        )
    if sum(len(k) + len(v) for k, v in request.raw_headers) > MAX_HEADER_BYTES:
        raise ApiError(431, "headers_too_large", f"headers over {MAX_HEADER_BYTES} bytes")
    return await handler(request)  # type: ignore[no-any-return]


async def create_query_pool(dsn: str, max_size: int = POOL_MAX) -> asyncpg.Pool:
    """A pool that opens connections lazily (min_size 0), so the service starts, and answers
    503, while PostgreSQL is down, and serves again as soon as it is back."""
    pool = await asyncpg.create_pool(
        dsn,
        min_size=0,
        max_size=max_size,
        timeout=CONNECT_TIMEOUT_S,
        command_timeout=STATEMENT_TIMEOUT_S,
        server_settings={**SESSION_SETTINGS, "application_name": "microblog-query"},
        reset=keep_session,  # no reset query per request
    )
    assert pool is not None
    return pool


async def _database(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    pool_max = int(os.environ.get(POOL_MAX_ENV) or POOL_MAX)
    pool = await create_query_pool(settings.database_url, pool_max)
    waiter = ProgressWaiter(pool, settings.topic)
    hub = app[STREAM_HUB]
    # One LISTEN connection per process, whatever the number of waits, streams and caches.
    listener = Listener(settings.database_url, application_name="microblog-query-listener")
    listener.on(CONSISTENCY_CHANNEL, waiter.notified, waiter.wake_all)
    listener.on(STREAM_CHANNEL, hub.wake, hub.wake_all)
    app[REVOCATIONS].listen(listener)
    pulls = PullAuthors()
    pulls.listen(listener)
    listener.start()
    app[POOL] = pool
    app[WAITER] = waiter
    app[PULL_AUTHORS] = pulls
    app[HOME_READS] = home = HomeReads(pool, pool_max, pulls)
    try:
        yield
    finally:
        await home.close()
        hub.close()
        await listener.stop()
        # Bounded: a close waits for connections in use, which a dead server may never release.
        try:
            async with asyncio.timeout(STATEMENT_TIMEOUT_S):
                await pool.close()
        except TimeoutError:
            pool.terminate()


async def _end_streams(app: web.Application) -> None:
    # on_shutdown runs before aiohttp waits for open requests: long-lived streams end now, so a
    # SIGTERM finishes within the shutdown timeout.
    app[STREAM_HUB].close()


def create_app(
    settings: Settings, rate_limits: RateLimits | None = None, stream_poll_s: float = 2.0
) -> web.Application:
    metrics = QueryMetrics()
    limits = rate_limits if rate_limits is not None else RateLimits.from_env()
    # Outermost first: metrics see the final status; the rate limiter sits outside the error
    # middleware so error answers carry its headers; the error middleware renders every
    # ApiError (the consistency wait's and the 503 included) as problem+json.
    app = web.Application(
        middlewares=[
            metrics.middleware(),
            make_rate_limit_middleware(limits),
            error_middleware,
            request_caps_middleware,
            database_unavailable_middleware,
            handlers.consistency_middleware,
        ]
    )
    app[SETTINGS] = settings
    app[METRICS] = metrics
    app[STREAM_HUB] = StreamHub(poll_s=stream_poll_s)
    app[REVOCATIONS] = Revocations()
    app.cleanup_ctx.append(_database)
    app.on_shutdown.append(_end_streams)
    add = app.router.add_get
    add("/healthz", healthz)
    add("/readyz", handlers.readyz)
    add("/metrics", metrics.handle)
    add("/openapi.json", openapi_handler(openapi.document()))
    add("/v1/timelines/home", handlers.home_timeline)
    add("/v1/timelines/public", handlers.public_timeline)
    add("/v1/timelines/tag/{tag}", handlers.tag_timeline)
    add("/v1/posts/{post_id}", handlers.post)
    add("/v1/posts/{post_id}/context", handlers.context)
    add("/v1/posts/{post_id}/history", handlers.history)
    add("/v1/users/by-username/{username}", handlers.user_by_username)
    add("/v1/users/{user_id}", handlers.user_by_id)
    add("/v1/users/{user_id}/posts", handlers.user_posts)
    add("/v1/users/{user_id}/followers", accounts.followers)
    add("/v1/users/{user_id}/following", accounts.following)
    add("/v1/relationships", accounts.relationships)
    add("/v1/follow_requests", accounts.follow_requests)
    add("/v1/audiences", accounts.audiences)
    add("/v1/audiences/{audience_id}/members", accounts.audience_members)
    add("/v1/notifications", notifications.notifications)
    add("/v1/search", handlers.search)
    add("/v1/streaming/home", streaming.home_stream)
    return app
