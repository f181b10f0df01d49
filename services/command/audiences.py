"""HTTP handlers for audiences: named lists of members an owner can post to.

Only the owner sees an audience: anyone else gets the same 404 as for a missing one.
"""

from __future__ import annotations

import asyncpg
from aiohttp import web
from msgspec import Struct

from services.command import decide, store
from services.command.pipeline import (
    EventAccepted,
    actor,
    body,
    execute,
    publish,
    request_id,
    user_scope,
)
from services.command.resources import IDS
from shared.events import AudienceName
from shared.http import parse_id


class NewAudience(Struct, frozen=True, forbid_unknown_fields=True):
    name: AudienceName


class AudienceAccepted(Struct, frozen=True):
    audience_id: str
    event_id: str
    position: str


def _audience_id(request: web.Request) -> int:
    return parse_id(request.match_info["audience_id"], "audience_id")


async def create_audience(request: web.Request) -> web.Response:
    me = await actor(request)
    new = await body(request, NewAudience)
    cmd = decide.CreateAudience(actor_id=me, audience_id=request.app[IDS].next_id(), name=new.name)
    event = decide.create_audience(cmd, request_id=request_id(request))

    async def work(conn: asyncpg.Connection) -> tuple[int, Struct]:
        await store.insert_audience(conn, cmd.audience_id, me, cmd.name)
        position = await publish(request, event)
        return 201, AudienceAccepted(str(cmd.audience_id), str(event.id), str(position))

    return await execute(request, user_scope(me), work)


async def delete_audience(request: web.Request) -> web.Response:
    me = await actor(request)
    cmd = decide.AudienceMember(actor_id=me, audience_id=_audience_id(request))

    async def work(conn: asyncpg.Connection) -> tuple[int, Struct]:
        # Locked, so a concurrent member change waits and then finds the audience deleted.
        audience = await store.get_audience(conn, cmd.audience_id, lock=True)
        event = decide.delete_audience(cmd, audience, request_id=request_id(request))
        await store.mark_audience_deleted(conn, cmd.audience_id)
        position = await publish(request, event)
        return 202, EventAccepted(str(event.id), str(position))

    return await execute(request, user_scope(me), work)


def _member_command(request: web.Request, me: int) -> decide.AudienceMember:
    return decide.AudienceMember(
        actor_id=me,
        audience_id=_audience_id(request),
        member_id=parse_id(request.match_info["user_id"], "user_id"),
    )


async def add_member(request: web.Request) -> web.Response:
    me = await actor(request)
    cmd = _member_command(request, me)

    async def work(conn: asyncpg.Connection) -> tuple[int, Struct]:
        audience = await store.get_audience(conn, cmd.audience_id, lock=True)
        exists = await store.user_exists(conn, cmd.member_id)
        event = decide.add_audience_member(
            cmd, audience, member_exists=exists, request_id=request_id(request)
        )
        await store.add_audience_member(conn, cmd.audience_id, cmd.member_id)
        position = await publish(request, event)
        return 202, EventAccepted(str(event.id), str(position))

    return await execute(request, user_scope(me), work)


async def remove_member(request: web.Request) -> web.Response:
    me = await actor(request)
    cmd = _member_command(request, me)

    async def work(conn: asyncpg.Connection) -> tuple[int, Struct]:
        audience = await store.get_audience(conn, cmd.audience_id, lock=True)
        removed = await store.remove_audience_member(conn, cmd.audience_id, cmd.member_id)
        event = decide.remove_audience_member(
            cmd, audience, is_member=removed, request_id=request_id(request)
        )
        position = await publish(request, event)
        return 202, EventAccepted(str(event.id), str(position))

    return await execute(request, user_scope(me), work)
