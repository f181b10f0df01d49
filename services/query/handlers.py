"""HTTP handlers of the query service for posts and timelines: parse, read, decide with the
policy, encode once. Accounts, notifications and streaming have modules of their own."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from typing import Any, Final, cast

import asyncpg
import msgspec
from aiohttp import web

from services.query import account_reads, repository, views
from services.query.consistency import ProgressWaiter
from services.query.home_reads import HomeReads
from services.query.metrics import QueryMetrics
from services.query.pagination import Page, UuidPage, link_header, parse_page
from services.query.policy import can_view
from shared.auth import verify_token
from shared.http import ApiError, json_response, not_found, parse_id
from shared.kafka import Position
from shared.revocations import REVOCATIONS
from shared.settings import Settings

SETTINGS: Final = web.AppKey("settings", Settings)
POOL: Final = web.AppKey("pool", asyncpg.Pool)
WAITER: Final = web.AppKey("waiter", ProgressWaiter)
HOME_READS: Final = web.AppKey("home_reads", HomeReads)
METRICS: Final = web.AppKey("metrics", QueryMetrics)

POSITION_HEADER: Final = "X-Consistency-Position"
READY_TIMEOUT_S: Final = 2.0
# Thread caps (schemas/semantics.md): they bound the work one context request can cause.
MAX_ANCESTORS: Final = 40
MAX_DESCENDANTS: Final = 200
MAX_THREAD_DEPTH: Final = 100
MAX_QUERY_CHARS: Final = 200
_TAG: Final = re.compile(r"\w{1,100}")


# ------------------------------------------------------------------ shared helpers


async def _authenticate(request: web.Request, required: bool) -> int | None:
    """The acting user from `Authorization: Bearer <token>`: signature and expiry checked
    without the database (shared.auth), logouts against the process's revocation set
    (shared.revocations; a primary-key probe only while that set cannot be trusted)."""
    header = request.headers.get("Authorization", "")
    if not header:
        if required:
            raise ApiError(401, "unauthorized", "Authorization: Bearer <token> required")
        return None
    scheme, _, token = header.partition(" ")
    secret = request.app[SETTINGS].token_secret
    claims = verify_token(secret, token.strip()) if scheme.lower() == "bearer" else None
    if claims is None or await request.app[REVOCATIONS].is_revoked(request.app[POOL], claims):
        raise ApiError(401, "invalid_token", "token is invalid, expired or revoked")
    return claims.user_id


async def viewer_of(request: web.Request) -> int | None:
    """The signed-in viewer, None when anonymous; a bad token is a 401 even where optional."""
    return await _authenticate(request, required=False)


async def signed_in(request: web.Request) -> int:
    return cast(int, await _authenticate(request, required=True))


def page_response(
    request: web.Request, page: Page | UuidPage, keys: Sequence[object], body: object
) -> web.Response:
    link = link_header(request.url, page, keys)
    return json_response(body, headers={"Link": link} if link else None)


def _items(request: web.Request, page: Page, rows: Sequence[asyncpg.Record]) -> web.Response:
    """A page of rows `(key, item)` whose items PostgreSQL already wrote as JSON
    (page_sql.page_json): joined, not decoded and encoded again."""
    body = msgspec.Raw(("[" + ",".join([r["item"] for r in rows]) + "]").encode())
    return page_response(request, page, [r["key"] for r in rows], body)


async def visible_user(request: web.Request, viewer: int | None) -> int:
    """The path's user id, if the user exists and no block stands between them and the viewer.

    Otherwise 404 like an unknown user (invariant 5): an empty list would tell a blocked viewer
    that the account exists and is blocking them.
    """
    user_id = parse_id(request.match_info["user_id"], "user_id")
    row = await account_reads.user(request.app[POOL], viewer, user_id)
    if row is None or row["blocked"]:
        raise not_found("user")
    return user_id


async def viewable_post(request: web.Request, viewer: int | None) -> asyncpg.Record:
    """The path's post if `can_view` lets the viewer see it; else 404, never 403."""
    post_id = parse_id(request.match_info["post_id"], "post_id")
    found = await repository.post_for_viewer(request.app[POOL], viewer, post_id)
    if found is None:
        raise not_found("post")
    row, relations = found
    if not can_view(viewer, views.post_facts(row), relations):
        raise not_found("post")  # the same answer as a missing post
    return row


# ------------------------------------------------------------------ timelines


async def home_timeline(request: web.Request) -> web.Response:
    viewer = await signed_in(request)
    page = parse_page(request.query)
    return _items(request, page, await request.app[HOME_READS].read(viewer, page))


async def user_posts(request: web.Request) -> web.Response:
    viewer = await viewer_of(request)
    user_id = parse_id(request.match_info["user_id"], "user_id")
    page = parse_page(request.query)
    # The same 404 as visible_user, checked in the page's own statement.
    rows = await repository.profile_posts(request.app[POOL], viewer, user_id, page)
    if rows is None:
        raise not_found("user")
    return _items(request, page, rows)


async def public_timeline(request: web.Request) -> web.Response:
    viewer = await viewer_of(request)
    page = parse_page(request.query)
    return _items(request, page, await repository.public_timeline(request.app[POOL], viewer, page))


async def tag_timeline(request: web.Request) -> web.Response:
    viewer = await viewer_of(request)
    tag = request.match_info["tag"].removeprefix("#")
    if not _TAG.fullmatch(tag):
        raise ApiError(422, "invalid_field", "tag must be 1-100 letters, digits or _", "tag")
    page = parse_page(request.query)
    rows = await repository.tag_timeline(request.app[POOL], viewer, tag.lower(), page)
    return _items(request, page, rows)


# ------------------------------------------------------------------ one post


async def post(request: web.Request) -> web.Response:
    viewer = await viewer_of(request)
    return json_response(views.item(await viewable_post(request, viewer), viewer))


async def context(request: web.Request) -> web.Response:
    viewer = await viewer_of(request)
    root = await viewable_post(request, viewer)
    pool = request.app[POOL]
    up = list(reversed(await repository.ancestors(pool, root["post_id"], MAX_ANCESTORS)))
    down = await repository.descendants(pool, root["post_id"], MAX_DESCENDANTS, MAX_THREAD_DEPTH)
    rows = await repository.posts_by_ids(pool, [*up, *down])
    facts = {pid: views.post_facts(r) for pid, r in rows.items()}
    relations = await repository.relations(
        pool,
        viewer,
        [f.author_id for f in facts.values()],
        [f.audience_id for f in facts.values() if f.audience_id is not None],
    )

    def shown(ids: list[int]) -> list[views.Item]:
        # Each post on its own: a reply stays visible under a parent the viewer cannot see.
        return [
            views.item(rows[pid], viewer)
            for pid in ids
            if pid in rows and can_view(viewer, facts[pid], relations)
        ]

    return json_response(views.Context(ancestors=shown(up), descendants=shown(down)))


async def history(request: web.Request) -> web.Response:
    viewer = await viewer_of(request)
    row = await viewable_post(request, viewer)
    versions = [
        views.Version(r["version"], r["text"], views.raw_json(r["media"]), r["created_at"])
        for r in await repository.history(request.app[POOL], row["post_id"])
    ]
    if not versions:  # a post never edited may have no version rows: it is its own version 0
        versions = [views.Version(0, row["text"], views.raw_json(row["media"]), row["created_at"])]
    return json_response(versions)


# ------------------------------------------------------------------ profiles and search


def _profile(row: asyncpg.Record | None) -> web.Response:
    # Signed-in readers never see accounts they block or are blocked by (schemas/semantics.md):
    # the same 404 as an unknown account, as for their posts.
    if row is None or row["blocked"]:
        raise not_found("user")
    return json_response(
        views.UserProfile(
            user_id=str(row["user_id"]),
            username=row["username"],
            display_name=row["display_name"],
            bio=row["bio"],
            avatar_url=row["avatar_url"],
            locked=row["locked"],
            created_at=row["created_at"],
            followers_count=row["followers_count"],
            following_count=row["following_count"],
            posts_count=row["posts_count"],
        )
    )


async def user_by_id(request: web.Request) -> web.Response:
    viewer = await viewer_of(request)
    user_id = parse_id(request.match_info["user_id"], "user_id")
    return _profile(await account_reads.profile_by_id(request.app[POOL], viewer, user_id))


async def user_by_username(request: web.Request) -> web.Response:
    viewer = await viewer_of(request)
    username = request.match_info["username"]
    if "\x00" in username:  # PostgreSQL text cannot hold NUL, so no username has one
        raise not_found("user")
    return _profile(await account_reads.profile_by_username(request.app[POOL], viewer, username))


async def search(request: web.Request) -> web.Response:
    viewer = await viewer_of(request)
    q = request.query.get("q", "")
    if not q.strip() or len(q) > MAX_QUERY_CHARS:
        raise ApiError(422, "invalid_field", f"q must be 1-{MAX_QUERY_CHARS} characters", "q")
    if "\x00" in q:  # PostgreSQL text cannot hold it: a 500 otherwise
        raise ApiError(422, "invalid_field", "q must not contain NUL characters", "q")
    kind = request.query.get("type")
    if kind not in (None, "posts", "accounts"):
        raise ApiError(422, "invalid_field", "type must be posts or accounts", "type")
    page = parse_page(request.query)
    pool = request.app[POOL]
    posts = [] if kind == "accounts" else await repository.search_posts(pool, viewer, q, page)
    prefix = q.strip().lstrip("@")
    accounts = (
        []
        if kind == "posts" or not prefix
        else await account_reads.search_accounts(pool, viewer, prefix, page)
    )
    body = views.SearchResults(
        accounts=[views.account(r) for r in accounts], posts=[views.item(r, viewer) for r in posts]
    )
    # Pages are well defined for one kind at a time; a mixed answer has no Link.
    keys = [r["key"] for r in (posts if kind == "posts" else accounts)] if kind else []
    return page_response(request, page, keys, body)


# ------------------------------------------------------------------ service endpoints


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
