"""HTTP handlers for posts: create, edit, delete, repost and like.

Whether the actor may see the post they reply to, quote, repost or like is decided by the same
pure policy the query side uses (shared.policy.can_view), on facts fetched first: the post's
command-side record, the actor's audience memberships (command side) and blocks and follows
(read model, best-effort).
"""

from __future__ import annotations

from typing import Annotated

import asyncpg
from aiohttp import web
from msgspec import Meta, Struct

from services.command import decide_posts, post_batch, post_store
from services.command.delivery import WIDE_AUTHORS
from services.command.pipeline import (
    EventAccepted,
    PostAccepted,
    actor,
    body,
    execute,
    idempotency_key,
    publish,
    request_id,
    user_scope,
)
from services.command.post_batch import POST_WRITER
from services.command.resources import IDS, POOL
from shared.entities import extract
from shared.events import AltText, Media, MediaKind, PostText, Url, Visibility
from shared.http import ApiError, parse_id
from shared.policy import Relations

# ---------------------------------------------------------------- input and output shapes

Dimension = Annotated[int, Meta(ge=1, le=100_000)]
# Ids travel as decimal strings (64-bit ids overflow JavaScript numbers); parse_id checks them.
IdText = Annotated[str, Meta(max_length=20)]


class MediaInput(Struct, frozen=True, forbid_unknown_fields=True):
    kind: MediaKind
    url: Url
    alt_text: AltText = ""
    width: Dimension | None = None
    height: Dimension | None = None

    def to_media(self) -> Media:
        return Media(
            kind=self.kind,
            url=self.url,
            alt_text=self.alt_text,
            width=self.width,
            height=self.height,
        )


MediaList = Annotated[tuple[MediaInput, ...], Meta(max_length=4)]


def _media(inputs: tuple[MediaInput, ...]) -> tuple[Media, ...]:
    # Media are stored as jsonb, which can't hold a NUL character: refuse it as bad input
    # rather than fail in the database.
    for i, m in enumerate(inputs):
        for name, value in (("url", m.url), ("alt_text", m.alt_text)):
            if "\x00" in value:
                raise ApiError(
                    422, "invalid_field", f"{name} must not contain NUL", f"media[{i}].{name}"
                )
    return tuple(m.to_media() for m in inputs)


class NewPost(Struct, frozen=True, forbid_unknown_fields=True):
    text: PostText
    visibility: Visibility = "public"
    audience_id: IdText | None = None
    in_reply_to_id: IdText | None = None
    quote_of_id: IdText | None = None
    media: MediaList = ()


class PostEdit(Struct, frozen=True, forbid_unknown_fields=True):
    text: PostText
    # Absent: the post keeps its media; [] removes them.
    media: MediaList | None = None


class RepostAccepted(Struct, frozen=True):
    repost_id: str
    event_id: str
    position: str


def _optional_id(value: str | None, field: str) -> int | None:
    return None if value is None else parse_id(value, field)


def _post_id(request: web.Request) -> int:
    return parse_id(request.match_info["post_id"], "post_id")


# ---------------------------------------------------------------- posts


async def create_post(request: web.Request) -> web.Response:
    me = await actor(request)
    new = await body(request, NewPost)
    cmd = decide_posts.CreatePost(
        actor_id=me,
        post_id=request.app[IDS].next_id(),
        text=new.text,
        visibility=new.visibility,
        audience_id=_optional_id(new.audience_id, "audience_id"),
        in_reply_to_id=_optional_id(new.in_reply_to_id, "in_reply_to_id"),
        quote_of_id=_optional_id(new.quote_of_id, "quote_of_id"),
        media=_media(new.media),
    )
    entities = extract(cmd.text)
    mention_names = entities.mention_names

    async def facts(conn: asyncpg.Connection) -> decide_posts.PostContext:
        return await post_store.post_context(
            conn,
            me,
            audience_id=cmd.audience_id,
            in_reply_to_id=cmd.in_reply_to_id,
            quote_of_id=cmd.quote_of_id,
            mention_names=mention_names,
        )

    if idempotency_key(request) is None:
        # The hot path: decided here, then recorded and published together with whatever
        # other posts arrive meanwhile (post_batch.py). Bad input fails before it queues.
        ctx = decide_posts.NO_CONTEXT
        wide_authors = request.app[WIDE_AUTHORS]
        if decide_posts.needs_context(cmd, mention_names):
            async with request.app[POOL].acquire() as conn:
                ctx = await facts(conn)
                wide = await wide_authors.is_wide(conn, me)
        else:
            wide = await wide_authors.is_wide(request.app[POOL], me)
        event = decide_posts.create_post(
            cmd, ctx, request_id=request_id(request), entities=entities, wide_author=wide
        )
        # The event id is unique already: it doubles as the internal idempotency key.
        position = await request.app[POST_WRITER].create(event, event.id.hex)
        return web.Response(
            body=post_batch.accepted(event, position),
            status=202,
            content_type="application/json",
        )

    # A client's key is claimed under a lock and may replay the first answer: one at a time.
    async def work(conn: asyncpg.Connection) -> tuple[int, Struct]:
        ctx = await facts(conn)
        wide = await request.app[WIDE_AUTHORS].is_wide(conn, me)
        event = decide_posts.create_post(
            cmd, ctx, request_id=request_id(request), entities=entities, wide_author=wide
        )
        data = event.data
        await post_store.insert_post(
            conn,
            cmd.post_id,
            me,
            visibility=data.visibility,
            audience_id=data.audience_id,
            mentions=[m.user_id for m in data.mentions],
            media=data.media,
        )
        position = await publish(request, event)
        return 202, PostAccepted(str(cmd.post_id), str(event.id), str(position))

    return await execute(request, user_scope(me), work)


async def edit_post(request: web.Request) -> web.Response:
    me = await actor(request)
    post_id = _post_id(request)
    edit = await body(request, PostEdit)
    media = None if edit.media is None else _media(edit.media)
    cmd = decide_posts.EditPost(actor_id=me, post_id=post_id, text=edit.text, media=media)

    async def work(conn: asyncpg.Connection) -> tuple[int, Struct]:
        post = await post_store.lock_post(conn, post_id)
        ctx = await post_store.post_context(conn, me, mention_names=extract(cmd.text).mention_names)
        event = decide_posts.edit_post(cmd, post, ctx, request_id=request_id(request))
        await post_store.update_post_content(
            conn, post_id, [m.user_id for m in event.data.mentions], event.data.media
        )
        position = await publish(request, event)
        return 202, PostAccepted(str(post_id), str(event.id), str(position))

    return await execute(request, user_scope(me), work)


async def delete_post(request: web.Request) -> web.Response:
    me = await actor(request)
    cmd = decide_posts.DeletePost(actor_id=me, post_id=_post_id(request))

    async def work(conn: asyncpg.Connection) -> tuple[int, Struct]:
        post = await post_store.lock_post(conn, cmd.post_id)
        event = decide_posts.delete_post(cmd, post, request_id=request_id(request))
        await post_store.mark_post_deleted(conn, cmd.post_id)
        position = await publish(request, event)
        return 202, PostAccepted(str(cmd.post_id), str(event.id), str(position))

    return await execute(request, user_scope(me), work)


# ---------------------------------------------------------------- reposts and likes


async def _viewing_facts(
    conn: asyncpg.Connection, me: int, post_id: int
) -> tuple[decide_posts.PostRecord | None, Relations]:
    post = await post_store.get_post(conn, post_id)
    if post is None:
        return None, Relations()
    audiences = [post.audience_id] if post.audience_id is not None else []
    return post, await post_store.relations(conn, me, [post.author_id], audiences)


async def repost(request: web.Request) -> web.Response:
    me = await actor(request)
    cmd = decide_posts.PostAction(
        actor_id=me, post_id=_post_id(request), repost_id=request.app[IDS].next_id()
    )

    async def work(conn: asyncpg.Connection) -> tuple[int, Struct]:
        post, relations = await _viewing_facts(conn, me, cmd.post_id)
        prior = await post_store.find_repost(conn, cmd.post_id, me)
        event = decide_posts.repost(
            cmd, post, relations, already=prior is not None, request_id=request_id(request)
        )
        if event is not None and await post_store.claim_repost(
            conn, cmd.post_id, me, cmd.repost_id, event.id
        ):
            position = str(await publish(request, event))
            await post_store.set_repost_position(conn, cmd.post_id, me, position)
            return 202, RepostAccepted(str(cmd.repost_id), str(event.id), position)
        # Reposted before (or by a concurrent request just now): the first answer stands.
        prior = prior or await post_store.find_repost(conn, cmd.post_id, me)
        assert prior is not None
        return 200, RepostAccepted(str(prior.repost_id), str(prior.event_id), prior.position)

    return await execute(request, user_scope(me), work)


async def unrepost(request: web.Request) -> web.Response:
    me = await actor(request)
    cmd = decide_posts.PostAction(actor_id=me, post_id=_post_id(request))

    async def work(conn: asyncpg.Connection) -> tuple[int, Struct]:
        post = await post_store.get_post(conn, cmd.post_id)
        repost_id = await post_store.delete_repost(conn, cmd.post_id, me)
        event = decide_posts.remove_repost(cmd, post, repost_id, request_id=request_id(request))
        position = await publish(request, event)
        return 202, EventAccepted(str(event.id), str(position))

    return await execute(request, user_scope(me), work)


async def like(request: web.Request) -> web.Response:
    me = await actor(request)
    cmd = decide_posts.PostAction(actor_id=me, post_id=_post_id(request))

    async def work(conn: asyncpg.Connection) -> tuple[int, Struct]:
        post, relations = await _viewing_facts(conn, me, cmd.post_id)
        prior = await post_store.find_like(conn, cmd.post_id, me)
        event = decide_posts.like(
            cmd, post, relations, already=prior is not None, request_id=request_id(request)
        )
        if event is not None and await post_store.claim_like(conn, cmd.post_id, me, event.id):
            position = str(await publish(request, event))
            await post_store.set_like_position(conn, cmd.post_id, me, position)
            return 202, EventAccepted(str(event.id), position)
        prior = prior or await post_store.find_like(conn, cmd.post_id, me)
        assert prior is not None
        return 200, EventAccepted(str(prior.event_id), prior.position)

    return await execute(request, user_scope(me), work)


async def unlike(request: web.Request) -> web.Response:
    me = await actor(request)
    cmd = decide_posts.PostAction(actor_id=me, post_id=_post_id(request))

    async def work(conn: asyncpg.Connection) -> tuple[int, Struct]:
        post = await post_store.get_post(conn, cmd.post_id)
        liked = await post_store.delete_like(conn, cmd.post_id, me)
        event = decide_posts.remove_like(cmd, post, liked=liked, request_id=request_id(request))
        position = await publish(request, event)
        return 202, EventAccepted(str(event.id), str(position))

    return await execute(request, user_scope(me), work)
