"""HTTP handlers of the query service: parse, read, decide with the policy, encode once.

Ids go out as decimal strings (63-bit ids lose precision as JavaScript numbers), times as
ISO-8601 UTC.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Final, cast

import asyncpg
import msgspec
from aiohttp import web

from services.query import repository
from services.query.consistency import ProgressWaiter
from services.query.metrics import QueryMetrics
from services.query.pagination import Page, link_header, parse_page
from services.query.policy import PostFacts, can_view
from shared.http import ApiError, bearer_user, json_response, not_found, parse_id
from shared.kafka import Position
from shared.settings import Settings

SETTINGS: Final = web.AppKey("settings", Settings)
POOL: Final = web.AppKey("pool", asyncpg.Pool)
WAITER: Final = web.AppKey("waiter", ProgressWaiter)
METRICS: Final = web.AppKey("metrics", QueryMetrics)

POSITION_HEADER: Final = "X-Consistency-Position"
READY_TIMEOUT_S: Final = 2.0


class Author(msgspec.Struct):
    user_id: str
    username: str
    display_name: str


class Item(msgspec.Struct):
    post_id: str
    author: Author
    text: str
    created_at: datetime


class UserProfile(msgspec.Struct):
    user_id: str
    username: str
    display_name: str
    created_at: datetime
    followers_count: int
    following_count: int
    posts_count: int


def _author(row: asyncpg.Record, id_column: str) -> Author:
    return Author(str(row[id_column]), row["username"], row["display_name"])


def _item(row: asyncpg.Record, author: Author) -> Item:
    return Item(str(row["post_id"]), author, row["text"], row["created_at"])


def _page(
    request: web.Request, page: Page, rows: Sequence[asyncpg.Record], items: list[Item]
) -> web.Response:
    link = link_header(request.url, page, [r["post_id"] for r in rows])
    return json_response(items, headers={"Link": link} if link else None)


def _viewer(request: web.Request) -> int | None:
    """The signed-in viewer, None when anonymous; a bad token is a 401 even where optional."""
    return bearer_user(request, request.app[SETTINGS].token_secret, required=False)


def _signed_in(request: web.Request) -> int:
    # required=True raises 401 instead of answering None.
    return cast(int, bearer_user(request, request.app[SETTINGS].token_secret, required=True))


async def home_timeline(request: web.Request) -> web.Response:
    viewer = _signed_in(request)
    page = parse_page(request.query)
    rows = await repository.home_timeline(request.app[POOL], viewer, page)
    return _page(request, page, rows, [_item(r, _author(r, "author_id")) for r in rows])


async def user_posts(request: web.Request) -> web.Response:
    user_id = parse_id(request.match_info["user_id"], "user_id")
    viewer = _viewer(request)
    page = parse_page(request.query)
    pool = request.app[POOL]
    user = await repository.author(pool, user_id, viewer)
    # Asked about a public post of this author: if even that is hidden from the viewer, the
    # whole list is, and it answers 404 like the user did not exist (invariant 5). An empty
    # list would tell a blocked viewer that the account exists and is blocking them.
    if user is None or not can_view(
        viewer, PostFacts(author_id=user_id), repository.relations_from_row(user, user_id)
    ):
        raise not_found("user")
    rows = await repository.author_posts(pool, user_id, viewer, page)
    author = _author(user, "user_id")
    return _page(request, page, rows, [_item(r, author) for r in rows])


async def post(request: web.Request) -> web.Response:
    post_id = parse_id(request.match_info["post_id"], "post_id")
    viewer = _viewer(request)
    row = await repository.post(request.app[POOL], post_id, viewer)
    if row is None:
        raise not_found("post")
    author_id: int = row["author_id"]
    relations = repository.relations_from_row(row, author_id)
    if not can_view(viewer, PostFacts(author_id=author_id), relations):
        raise not_found("post")  # the same answer as a missing post: 404, never 403
    return json_response(_item(row, _author(row, "author_id")))


def _profile(row: asyncpg.Record | None) -> web.Response:
    if row is None:
        raise not_found("user")
    return json_response(
        UserProfile(
            user_id=str(row["user_id"]),
            username=row["username"],
            display_name=row["display_name"],
            created_at=row["created_at"],
            followers_count=row["followers_count"],
            following_count=row["following_count"],
            posts_count=row["posts_count"],
        )
    )


async def user_by_id(request: web.Request) -> web.Response:
    user_id = parse_id(request.match_info["user_id"], "user_id")
    return _profile(await repository.profile_by_id(request.app[POOL], user_id))


async def user_by_username(request: web.Request) -> web.Response:
    username = request.match_info["username"]
    return _profile(await repository.profile_by_username(request.app[POOL], username))


async def readyz(request: web.Request) -> web.Response:
    try:
        async with asyncio.timeout(READY_TIMEOUT_S):
            await repository.ping(request.app[POOL])
    except Exception as exc:  # any failure to answer means "not ready", whatever its type
        raise ApiError(503, "not_ready", f"PostgreSQL does not answer: {exc!r}") from None
    return json_response({"status": "ready"})


@web.middleware
async def consistency_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """Read-your-writes for every GET route: with `X-Consistency-Position: <partition>:<offset>`
    the request runs only once the projector has passed that position (bounded wait)."""
    header = request.headers.get(POSITION_HEADER)
    routed = request.match_info.http_exception is None
    if header is not None and routed and request.method in ("GET", "HEAD"):
        try:
            position = Position.parse(header)
        except ValueError:
            raise ApiError(
                400,
                "invalid_position",
                f"{POSITION_HEADER} must look like '<partition>:<offset>'",
                POSITION_HEADER,
            ) from None
        timeout = request.app[SETTINGS].consistency_timeout_s
        reached = await request.app[WAITER].passed(position, timeout)
        request.app[METRICS].consistency_waits.labels("reached" if reached else "timeout").inc()
        if not reached:
            raise ApiError(
                504,
                "consistency_timeout",
                f"the read models did not reach position {position} within {timeout:g} s;"
                " the write is durable and will appear, retry the read later",
                POSITION_HEADER,
            )
    return await handler(request)
