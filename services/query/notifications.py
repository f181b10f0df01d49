"""`GET /v1/notifications`: the signed-in user's notifications, newest first, paged by the
causing event's id (a UUIDv7 string). Blocks, mutes and the post's visibility are checked again
at read time (stream_reads._NOTIFICATIONS_INNER)."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg
from aiohttp import web

from services.query import repository, stream_reads, views
from services.query.handlers import POOL, page_response, signed_in
from services.query.pagination import parse_uuid_page
from services.query.repository import Db


async def render(db: Db, rows: Sequence[asyncpg.Record], viewer: int) -> list[views.Notification]:
    """Notifications with their actor and, where there is one, the post as an item."""
    posts = await repository.posts_by_ids(db, {r["post_id"] for r in rows if r["post_id"]})
    return [
        views.Notification(
            id=str(r["event_id"]),
            type=r["kind"],
            created_at=r["created_at"],
            account=views.account(r),
            post=views.item(posts[r["post_id"]], viewer) if r["post_id"] in posts else None,
        )
        for r in rows
        # A post deleted between the two reads: the notification goes with it.
        if r["post_id"] is None or r["post_id"] in posts
    ]


async def notifications(request: web.Request) -> web.Response:
    viewer = await signed_in(request)
    page = parse_uuid_page(request.query)
    pool = request.app[POOL]
    rows = await stream_reads.notifications(pool, viewer, page.max_id, page.since_id, page.limit)
    return page_response(
        request, page, [r["event_id"] for r in rows], await render(pool, rows, viewer)
    )
