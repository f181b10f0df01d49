"""The command service's aiohttp application: routes, middlewares, resources."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Final

from aiohttp import web

from services.command import audiences, handlers, openapi, posting
from services.command.observability import METRICS, CommandMetrics, request_id_middleware
from services.command.resources import SETTINGS, resources
from services.command.throttle import LOGIN_THROTTLE, LoginLimits, LoginThrottle
from shared.http import error_middleware, healthz
from shared.listener import Listener
from shared.openapi import handler as openapi_handler
from shared.ratelimit import RateLimits, make_rate_limit_middleware
from shared.revocations import REVOCATIONS, Revocations
from shared.settings import Settings

# Request line and each header at most 8 KiB (aiohttp's own defaults, stated so they are
# deliberate), at most 64 headers; an idle keep-alive connection is closed after 15 s so slow
# or abandoned clients don't pin sockets.
HANDLER_ARGS: Final = {
    "max_line_size": 8190,
    "max_field_size": 8190,
    "max_headers": 64,
    "keepalive_timeout": 15.0,
}


async def _revocations(app: web.Application) -> AsyncIterator[None]:
    """Keep the process's revoked-token set current over its own LISTEN connection."""
    listener = Listener(app[SETTINGS].database_url, application_name="microblog-command-listener")
    app[REVOCATIONS].listen(listener)
    listener.start()
    try:
        yield
    finally:
        await listener.stop()


def create_app(
    settings: Settings,
    *,
    rate_limits: RateLimits | None = None,
    login_limits: LoginLimits | None = None,
) -> web.Application:
    """The app; limits default to the environment (MB_RATE_LIMIT_*, MB_LOGIN_LIMIT_*)."""
    metrics = CommandMetrics()
    rate_limit = make_rate_limit_middleware(
        rate_limits if rate_limits is not None else RateLimits.from_env("MB_RATE_LIMIT_"),
        on_limited=lambda scope: metrics.rate_limited.labels(scope).inc(),
    )
    # Outermost first: the request id and the metrics see every answer, 429s included; the
    # rate limiter sits outside the error middleware so error answers carry its headers.
    app = web.Application(
        client_max_size=settings.max_body_bytes,
        middlewares=[
            request_id_middleware,
            metrics.middleware(settings.access_log),
            rate_limit,
            error_middleware,
        ],
        handler_args=HANDLER_ARGS,
    )
    app[SETTINGS] = settings
    app[METRICS] = metrics
    app[LOGIN_THROTTLE] = LoginThrottle(
        login_limits if login_limits is not None else LoginLimits.from_env()
    )
    app[REVOCATIONS] = Revocations()
    app.cleanup_ctx.append(resources)
    app.cleanup_ctx.append(_revocations)
    r = app.router
    r.add_get("/healthz", healthz)
    r.add_get("/readyz", handlers.readyz)
    r.add_get("/metrics", metrics.handle)
    r.add_get("/openapi.json", openapi_handler(openapi.document()))
    r.add_post("/v1/accounts", handlers.register)
    r.add_patch("/v1/accounts/me", handlers.update_profile)
    r.add_post("/v1/sessions", handlers.login)
    r.add_delete("/v1/sessions/current", handlers.logout)
    r.add_post("/v1/posts", posting.create_post)
    r.add_patch("/v1/posts/{post_id}", posting.edit_post)
    r.add_delete("/v1/posts/{post_id}", posting.delete_post)
    r.add_put("/v1/posts/{post_id}/repost", posting.repost)
    r.add_delete("/v1/posts/{post_id}/repost", posting.unrepost)
    r.add_put("/v1/posts/{post_id}/like", posting.like)
    r.add_delete("/v1/posts/{post_id}/like", posting.unlike)
    r.add_put("/v1/users/{user_id}/follow", handlers.follow)
    r.add_delete("/v1/users/{user_id}/follow", handlers.unfollow)
    r.add_put("/v1/users/{user_id}/block", handlers.block)
    r.add_delete("/v1/users/{user_id}/block", handlers.unblock)
    r.add_put("/v1/users/{user_id}/mute", handlers.mute)
    r.add_delete("/v1/users/{user_id}/mute", handlers.unmute)
    r.add_post("/v1/follow_requests/{user_id}/approve", handlers.approve_follow_request)
    r.add_post("/v1/follow_requests/{user_id}/reject", handlers.reject_follow_request)
    r.add_post("/v1/audiences", audiences.create_audience)
    r.add_delete("/v1/audiences/{audience_id}", audiences.delete_audience)
    r.add_put("/v1/audiences/{audience_id}/members/{user_id}", audiences.add_member)
    r.add_delete("/v1/audiences/{audience_id}/members/{user_id}", audiences.remove_member)
    return app
