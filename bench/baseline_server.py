"""Baselines over HTTP, served the way the query service serves (aiohttp, uvloop, asyncpg,
msgspec), so a ratio isolates what the services do on top:

- `POST /noop`: reads the body and answers 202 with a small JSON; nothing else.
- `GET /naive_home`: the signed-in user's home timeline computed at read time, a fan-out-on-read
  JOIN of follows and posts with ORDER BY and LIMIT, instead of reading a materialized timeline.

`python -m bench.baseline_server` on BENCH_BASELINE_PORT against DATABASE_URL.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Final

import asyncpg
import msgspec
import uvloop
from aiohttp import web

from services.query.app import create_query_pool
from shared.auth import verify_token
from shared.runtime import freeze_on_startup

POOL: Final = web.AppKey("pool", asyncpg.Pool)

NAIVE_HOME: Final = """
SELECT p.post_id, p.author_id, u.username, u.display_name, p.text, p.created_at
FROM follows f
JOIN posts p ON p.author_id = f.followee_id
JOIN users u ON u.user_id = p.author_id
WHERE f.follower_id = $1 AND f.active
ORDER BY p.post_id DESC
LIMIT 20
"""


class Author(msgspec.Struct):
    user_id: str
    username: str
    display_name: str


class Item(msgspec.Struct):
    post_id: str
    author: Author
    text: str
    created_at: datetime


_encoder: Final = msgspec.json.Encoder()
_NOOP_BODY: Final = b'{"post_id":"1","event_id":"1","position":"0:0"}'


async def noop(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(body=_NOOP_BODY, status=202, content_type="application/json")


async def naive_home(request: web.Request) -> web.Response:
    auth = request.headers.get("Authorization", "")
    claims = verify_token(os.environ["MB_TOKEN_SECRET"], auth.removeprefix("Bearer "))
    if claims is None:
        raise web.HTTPUnauthorized()
    rows = await request.app[POOL].fetch(NAIVE_HOME, claims.user_id)
    items = [
        Item(
            str(r["post_id"]),
            Author(str(r["author_id"]), r["username"], r["display_name"]),
            r["text"],
            r["created_at"],
        )
        for r in rows
    ]
    return web.Response(body=_encoder.encode(items), content_type="application/json")


async def readyz(request: web.Request) -> web.Response:
    await request.app[POOL].fetchval("SELECT 1")
    return web.Response(text="ok")


async def _pool(app: web.Application) -> AsyncIterator[None]:
    # The same pool as the query service's (size, release without a reset query).
    pool = await create_query_pool(os.environ["DATABASE_URL"])
    app[POOL] = pool
    yield
    await pool.close()


def main() -> None:
    app = web.Application()
    app.cleanup_ctx.append(_pool)
    # Started like the query service: its startup heap out of the collector's reach.
    app.on_startup.append(freeze_on_startup)
    app.router.add_post("/noop", noop)
    app.router.add_get("/naive_home", naive_home)
    app.router.add_get("/readyz", readyz)
    loop = uvloop.new_event_loop()
    web.run_app(
        app,
        host="127.0.0.1",
        port=int(os.environ["BENCH_BASELINE_PORT"]),
        access_log=None,
        print=None,
        loop=loop,
        # The naive JOIN cannot keep up with the sweep's rates: thousands of its requests queue
        # for the pool's 4 connections and the client gives up on them (15 s). Without
        # cancellation they all ran anyway, one after another, for ~50 s after the sweep, and
        # the next figure's home reads were measured beside them: 464 and 484 req/s instead
        # of 1,651 in one default run (and its raw loop 815 instead of 1,751).
        handler_cancellation=True,
    )


if __name__ == "__main__":
    main()
