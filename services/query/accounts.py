"""HTTP handlers for account lists and relations: followers, following, relationships, follow
requests, audiences. Lists hide accounts blocked either way with the viewer."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import asyncpg
from aiohttp import web

from services.query import account_reads, views
from services.query.handlers import POOL, page_response, signed_in, viewer_of, visible_user
from services.query.pagination import Page, parse_page
from shared.http import ApiError, json_response, not_found, parse_id

MAX_RELATIONSHIP_IDS: Final = 40


def _accounts(request: web.Request, page: Page, rows: Sequence[asyncpg.Record]) -> web.Response:
    return page_response(request, page, [r["key"] for r in rows], [views.account(r) for r in rows])


async def followers(request: web.Request) -> web.Response:
    viewer = await viewer_of(request)
    user_id = await visible_user(request, viewer)
    page = parse_page(request.query)
    return _accounts(
        request, page, await account_reads.followers(request.app[POOL], viewer, user_id, page)
    )


async def following(request: web.Request) -> web.Response:
    viewer = await viewer_of(request)
    user_id = await visible_user(request, viewer)
    page = parse_page(request.query)
    return _accounts(
        request, page, await account_reads.following(request.app[POOL], viewer, user_id, page)
    )


async def follow_requests(request: web.Request) -> web.Response:
    viewer = await signed_in(request)
    page = parse_page(request.query)
    return _accounts(
        request, page, await account_reads.follow_requests(request.app[POOL], viewer, page)
    )


def parse_ids(values: list[str], field: str, limit: int) -> list[int]:
    """Repeated id parameters (`id=1&id=2`, or Mastodon's `id[]=1`): at most `limit`, each
    a valid id, duplicates dropped in order."""
    if len(values) > limit:
        raise ApiError(422, "invalid_field", f"at most {limit} ids", field)
    return list(dict.fromkeys(parse_id(v, field) for v in values))


async def relationships(request: web.Request) -> web.Response:
    viewer = await signed_in(request)
    ids = parse_ids(
        [*request.query.getall("id", []), *request.query.getall("id[]", [])],
        "id",
        MAX_RELATIONSHIP_IDS,
    )
    rows = await account_reads.relationships(request.app[POOL], viewer, ids) if ids else []
    return json_response(
        [
            views.Relationship(
                id=str(r["id"]),
                following=r["following"],
                followed_by=r["followed_by"],
                requested=r["requested"],
                blocking=r["blocking"],
                blocked_by=r["blocked_by"],
                muting=r["muting"],
                muting_expires_at=r["muting_expires_at"],
            )
            for r in rows
        ]
    )


async def audiences(request: web.Request) -> web.Response:
    owner = await signed_in(request)
    rows = await account_reads.audiences(request.app[POOL], owner)
    return json_response(
        [
            views.AudienceView(
                str(r["audience_id"]), r["name"], r["created_at"], r["members_count"]
            )
            for r in rows
        ]
    )


async def audience_members(request: web.Request) -> web.Response:
    viewer = await signed_in(request)
    audience_id = parse_id(request.match_info["audience_id"], "audience_id")
    pool = request.app[POOL]
    # Only the owner learns that an audience exists, let alone who is in it.
    if await account_reads.audience_owner(pool, audience_id) != viewer:
        raise not_found("audience")
    page = parse_page(request.query)
    return _accounts(request, page, await account_reads.audience_members(pool, audience_id, page))
