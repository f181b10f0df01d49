"""The command service's aiohttp application: routes, middlewares, resources."""

from __future__ import annotations

import re
import uuid
from typing import Final

from aiohttp import web
from aiohttp.typedefs import Handler

from services.command import handlers
from services.command.resources import REQUEST_ID, SETTINGS, resources
from shared.http import error_middleware, healthz
from shared.settings import Settings

# A client's request id is echoed into events and logs, so only short, inert ones are kept.
_SANE_REQUEST_ID: Final = re.compile(r"[A-Za-z0-9._:/+=-]{1,128}")


@web.middleware
async def request_id_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    given = request.headers.get("X-Request-Id", "")
    request_id = given if _SANE_REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
    request[REQUEST_ID] = request_id
    response = await handler(request)
    response.headers["X-Request-Id"] = request_id
    return response


def create_app(settings: Settings) -> web.Application:
    # The request-id middleware sits outside the error middleware so error answers carry it too.
    app = web.Application(
        client_max_size=settings.max_body_bytes,
        middlewares=[request_id_middleware, error_middleware],
    )
    app[SETTINGS] = settings
    app.cleanup_ctx.append(resources)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", handlers.readyz)
    app.router.add_post("/v1/accounts", handlers.register)
    app.router.add_post("/v1/sessions", handlers.login)
    app.router.add_post("/v1/posts", handlers.create_post)
    app.router.add_delete("/v1/posts/{post_id}", handlers.delete_post)
    app.router.add_put("/v1/users/{user_id}/follow", handlers.follow)
    app.router.add_delete("/v1/users/{user_id}/follow", handlers.unfollow)
    app.router.add_put("/v1/users/{user_id}/block", handlers.block)
    app.router.add_delete("/v1/users/{user_id}/block", handlers.unblock)
    return app
