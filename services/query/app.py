"""Composition of the query service's web application: routes, middlewares, resources."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from services.query import handlers
from services.query.consistency import ProgressWaiter
from services.query.handlers import METRICS, POOL, SETTINGS, WAITER
from services.query.metrics import QueryMetrics
from shared.db import create_pool
from shared.http import error_middleware, healthz
from shared.settings import Settings


async def _database(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    pool = await create_pool(settings.database_url)
    waiter = ProgressWaiter(pool, settings.database_url, settings.topic)
    waiter.start()
    app[POOL] = pool
    app[WAITER] = waiter
    try:
        yield
    finally:
        await waiter.stop()
        await pool.close()


def create_app(settings: Settings) -> web.Application:
    metrics = QueryMetrics()
    # Outermost first: metrics see the final status, the error middleware renders every
    # ApiError (the consistency wait's included) as problem+json.
    app = web.Application(
        middlewares=[metrics.middleware(), error_middleware, handlers.consistency_middleware]
    )
    app[SETTINGS] = settings
    app[METRICS] = metrics
    app.cleanup_ctx.append(_database)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", handlers.readyz)
    app.router.add_get("/metrics", metrics.handle)
    app.router.add_get("/v1/timelines/home", handlers.home_timeline)
    app.router.add_get("/v1/posts/{post_id}", handlers.post)
    app.router.add_get("/v1/users/by-username/{username}", handlers.user_by_username)
    app.router.add_get("/v1/users/{user_id}", handlers.user_by_id)
    app.router.add_get("/v1/users/{user_id}/posts", handlers.user_posts)
    return app
