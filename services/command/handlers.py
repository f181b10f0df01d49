"""HTTP handlers for accounts, sessions, profiles and relations between users.

Each one parses, fetches facts, decides (services/command/decide.py) and appends through the
shared pipeline (services/command/pipeline.py): one transaction that commits only after the
broker acknowledged the event.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Annotated

import asyncpg
from aiohttp import web
from msgspec import Meta, Struct

from services.command import decide, store
from services.command.decide import Decision
from services.command.observability import METRICS
from services.command.pipeline import (
    ANONYMOUS_SCOPE,
    EventAccepted,
    actor,
    authenticate,
    body,
    execute,
    idempotency_key,
    in_thread,
    optional_body,
    publish,
    request_id,
    user_scope,
)
from services.command.resources import IDS, POOL, SETTINGS
from services.command.throttle import LOGIN_THROTTLE, refusal
from shared.auth import hash_password, issue_token, verify_password
from shared.events import Bio, DisplayName, FollowRequested, Url, Username
from shared.http import ApiError, json_response, parse_id
from shared.kafka import kafka_ready
from shared.revocations import REVOCATIONS

# ---------------------------------------------------------------- input and output shapes

Password = Annotated[str, Meta(min_length=8, max_length=256)]
# Login only bounds its input: a name or password that can't exist is just a wrong credential.
LoginText = Annotated[str, Meta(min_length=1, max_length=256)]


class NewAccount(Struct, frozen=True, forbid_unknown_fields=True):
    username: Username
    password: Password
    display_name: DisplayName = ""


class Login(Struct, frozen=True, forbid_unknown_fields=True):
    username: LoginText
    password: LoginText


class ProfileChange(Struct, frozen=True, forbid_unknown_fields=True):
    """Absent (or null) fields stay as they are."""

    display_name: DisplayName | None = None
    bio: Bio | None = None
    avatar_url: Url | None = None
    locked: bool | None = None


class MuteOptions(Struct, frozen=True, forbid_unknown_fields=True):
    expires_in_s: int | None = None


class AccountCreated(Struct, frozen=True):
    user_id: str
    username: str
    position: str


class SessionCreated(Struct, frozen=True):
    token: str
    user_id: str
    expires_at: datetime


class FollowAccepted(Struct, frozen=True):
    event_id: str
    position: str
    # "following", or "requested" when the account is locked and must approve first.
    state: str


# ---------------------------------------------------------------- accounts and sessions


async def register(request: web.Request) -> web.Response:
    new = await body(request, NewAccount)
    password_hash = await in_thread(hash_password, new.password)
    cmd = decide.RegisterAccount(
        user_id=request.app[IDS].next_id(), username=new.username, display_name=new.display_name
    )

    async def work(conn: asyncpg.Connection) -> tuple[int, Struct]:
        taken = await store.username_taken(conn, cmd.username)
        event = decide.register_account(cmd, username_taken=taken, request_id=request_id(request))
        try:
            await store.insert_account(conn, cmd.user_id, cmd.username, password_hash)
        except asyncpg.UniqueViolationError:
            # A concurrent registration of the same name committed between our check and insert.
            raise decide.username_taken_error() from None
        position = await publish(request, event)
        return 201, AccountCreated(str(cmd.user_id), cmd.username, str(position))

    return await execute(request, ANONYMOUS_SCOPE, work)


async def login(request: web.Request) -> web.Response:
    creds_in = await body(request, Login)
    # Validated for a uniform API but not stored: a login appends nothing, so a retry is
    # harmless, and keeping issued tokens in a table would only make them leakable.
    idempotency_key(request)
    throttle = request.app[LOGIN_THROTTLE]
    refused = throttle.check(creds_in.username, request.remote or "unknown")
    if refused is not None:
        request.app[METRICS].rate_limited.labels(refused[0]).inc()
        return refusal(*refused)
    settings = request.app[SETTINGS]
    async with request.app[POOL].acquire() as conn:
        creds = await store.find_credentials(conn, creds_in.username)
    # An unknown name is checked against a dummy hash, so timing does not reveal which names exist.
    ok = await in_thread(verify_password, creds.password_hash if creds else None, creds_in.password)
    if creds is None or not ok:
        throttle.failed(creds_in.username)
        raise ApiError(401, "invalid_credentials", "username or password is wrong")
    token, expires = issue_token(settings.token_secret, creds.user_id, settings.token_ttl_s)
    return json_response(
        SessionCreated(token, str(creds.user_id), datetime.fromtimestamp(expires, UTC))
    )


async def logout(request: web.Request) -> web.Response:
    """Revoke the presented token; both services refuse it from now on."""
    claims = await authenticate(request)
    async with request.app[POOL].acquire() as conn:
        await store.revoke_token(conn, claims.nonce, datetime.fromtimestamp(claims.expires_at, UTC))
    # Committed: other processes hear of it by NOTIFY; this one must not wait for that.
    request.app[REVOCATIONS].add(claims.nonce, claims.expires_at)
    return web.Response(status=204)


async def update_profile(request: web.Request) -> web.Response:
    me = await actor(request)
    change = await body(request, ProfileChange)
    cmd = decide.UpdateProfile(
        actor_id=me,
        display_name=change.display_name,
        bio=change.bio,
        avatar_url=change.avatar_url,
        locked=change.locked,
    )
    event = decide.update_profile(cmd, request_id=request_id(request))

    async def work(conn: asyncpg.Connection) -> tuple[int, Struct]:
        approvals = []
        if cmd.locked is not None:
            await store.set_locked(conn, me, cmd.locked)
            if not cmd.locked:
                followers = await store.take_follow_requests_to(conn, me)
                approvals = decide.approve_all_on_unlock(
                    me, followers, request_id=request_id(request)
                )
        position = await publish(request, event)
        # The approvals follow the profile change on the account's partition: the answer's
        # position is the last of them, so a consistency wait on it covers them all.
        for approval in approvals:
            position = await publish(request, approval)
        return 202, EventAccepted(str(event.id), str(position))

    return await execute(request, user_scope(me), work)


# ---------------------------------------------------------------- follows, blocks, mutes


async def _relate(request: web.Request, decision: Decision, *, with_blocks: bool) -> web.Response:
    me = await actor(request)
    cmd = decide.Relate(actor_id=me, target_id=parse_id(request.match_info["user_id"], "user_id"))

    async def work(conn: asyncpg.Connection) -> tuple[int, Struct]:
        facts = await store.target_facts(conn, me, cmd.target_id, with_blocks=with_blocks)
        event = decision(cmd, facts, request_id=request_id(request))
        position = await publish(request, event)
        return 202, EventAccepted(str(event.id), str(position))

    return await execute(request, user_scope(me), work)


async def follow(request: web.Request) -> web.Response:
    me = await actor(request)
    cmd = decide.Relate(actor_id=me, target_id=parse_id(request.match_info["user_id"], "user_id"))

    async def work(conn: asyncpg.Connection) -> tuple[int, Struct]:
        facts = await store.target_facts(conn, me, cmd.target_id, with_blocks=True)
        event = decide.follow(cmd, facts, request_id=request_id(request))
        requested = isinstance(event, FollowRequested)
        if requested:
            await store.add_follow_request(conn, me, cmd.target_id)
        position = await publish(request, event)
        state = "requested" if requested else "following"
        return 202, FollowAccepted(str(event.id), str(position), state)

    return await execute(request, user_scope(me), work)


async def unfollow(request: web.Request) -> web.Response:
    """Ends a follow, and withdraws a pending follow request too."""
    me = await actor(request)
    cmd = decide.Relate(actor_id=me, target_id=parse_id(request.match_info["user_id"], "user_id"))

    async def work(conn: asyncpg.Connection) -> tuple[int, Struct]:
        facts = await store.target_facts(conn, me, cmd.target_id, with_blocks=False)
        event = decide.unfollow(cmd, facts, request_id=request_id(request))
        await store.take_follow_request(conn, me, cmd.target_id)
        position = await publish(request, event)
        return 202, EventAccepted(str(event.id), str(position))

    return await execute(request, user_scope(me), work)


async def block(request: web.Request) -> web.Response:
    me = await actor(request)
    cmd = decide.Relate(actor_id=me, target_id=parse_id(request.match_info["user_id"], "user_id"))

    async def work(conn: asyncpg.Connection) -> tuple[int, Struct]:
        facts = await store.target_facts(conn, me, cmd.target_id, with_blocks=False)
        event = decide.block(cmd, facts, request_id=request_id(request))
        await store.drop_follow_requests_between(conn, me, cmd.target_id)
        position = await publish(request, event)
        return 202, EventAccepted(str(event.id), str(position))

    return await execute(request, user_scope(me), work)


async def unblock(request: web.Request) -> web.Response:
    return await _relate(request, decide.unblock, with_blocks=False)


async def unmute(request: web.Request) -> web.Response:
    return await _relate(request, decide.unmute, with_blocks=False)


async def mute(request: web.Request) -> web.Response:
    me = await actor(request)
    target = parse_id(request.match_info["user_id"], "user_id")
    options = await optional_body(request, MuteOptions, MuteOptions())
    cmd = decide.Mute(actor_id=me, target_id=target, expires_in_s=options.expires_in_s)

    async def work(conn: asyncpg.Connection) -> tuple[int, Struct]:
        facts = await store.target_facts(conn, me, target, with_blocks=False)
        event = decide.mute(cmd, facts, now=datetime.now(UTC), request_id=request_id(request))
        position = await publish(request, event)
        return 202, EventAccepted(str(event.id), str(position))

    return await execute(request, user_scope(me), work)


async def _answer_follow_request(request: web.Request, approve: bool) -> web.Response:
    me = await actor(request)
    cmd = decide.Relate(actor_id=me, target_id=parse_id(request.match_info["user_id"], "user_id"))
    decision = decide.approve_follow_request if approve else decide.reject_follow_request

    async def work(conn: asyncpg.Connection) -> tuple[int, Struct]:
        pending = await store.take_follow_request(conn, cmd.target_id, me)
        event = decision(cmd, pending=pending, request_id=request_id(request))
        position = await publish(request, event)
        return 202, EventAccepted(str(event.id), str(position))

    return await execute(request, user_scope(me), work)


async def approve_follow_request(request: web.Request) -> web.Response:
    return await _answer_follow_request(request, approve=True)


async def reject_follow_request(request: web.Request) -> web.Response:
    return await _answer_follow_request(request, approve=False)


# ---------------------------------------------------------------- readiness


async def readyz(request: web.Request) -> web.Response:
    try:
        async with asyncio.timeout(3):
            await request.app[POOL].fetchval("SELECT 1")
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
        raise ApiError(503, "not_ready", "PostgreSQL does not answer") from None
    if not await kafka_ready(request.app[SETTINGS]):
        raise ApiError(503, "not_ready", "Kafka does not answer")
    return json_response({"status": "ready"})
