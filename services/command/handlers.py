"""HTTP handlers: parse, fetch facts, decide, append to the log, answer.

Every command runs in one PostgreSQL transaction that stays open while the event is produced
and commits only after the broker acknowledged it. A refused command or a failed produce thus
rolls back every command-side write (the account row, the post's authorship, the idempotency
record), and a 2xx always names an event that is durably on the log (invariant 2).

The one gap left: the broker acks and then the commit fails (or our timeout fires just before a
late ack). The event is then on the log without its command-side row; the client saw an error
and may retry. That is the price of not running a distributed transaction, and it is far
rarer than the dual write it replaces (commit first, then produce).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated, Final, TypeVar

import asyncpg
import msgspec
from aiohttp import web
from aiokafka.errors import KafkaError
from msgspec import Meta, Struct

from services.command import decide, store
from services.command.resources import IDS, POOL, PUBLISHER, REQUEST_ID, SETTINGS
from shared.auth import hash_password, issue_token, verify_password
from shared.events import DisplayName, Event, PostText, Username
from shared.http import ApiError, bearer_user, json_response, parse_id, read_body
from shared.kafka import Position, kafka_ready

log = logging.getLogger("microblog.command")
T = TypeVar("T")

ANONYMOUS_SCOPE: Final = "anonymous"
_encoder: Final = msgspec.json.Encoder()
_IDEMPOTENCY_KEY: Final = re.compile(r"[\x20-\x7e]{1,200}")

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


class NewPost(Struct, frozen=True, forbid_unknown_fields=True):
    text: PostText


class AccountCreated(Struct, frozen=True):
    user_id: str
    username: str
    position: str


class SessionCreated(Struct, frozen=True):
    token: str
    user_id: str
    expires_at: datetime


class PostAccepted(Struct, frozen=True):
    post_id: str
    event_id: str
    position: str


class EventAccepted(Struct, frozen=True):
    event_id: str
    position: str


# ---------------------------------------------------------------- the command pipeline

Work = Callable[[asyncpg.Connection], Awaitable[tuple[int, Struct]]]


def _idempotency_key(request: web.Request) -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    if not _IDEMPOTENCY_KEY.fullmatch(key):
        raise ApiError(
            422,
            "invalid_header",
            "Idempotency-Key must be 1-200 printable ASCII characters",
            "Idempotency-Key",
        )
    return key


def _user_scope(user_id: int) -> str:
    return f"user:{user_id}"


async def _fingerprint(request: web.Request) -> bytes:
    # Keyed, because a registration body carries a password (see 010_idempotency.sql).
    secret = request.app[SETTINGS].token_secret.encode()
    mac = hmac.new(secret, digestmod=hashlib.sha256)
    for part in (request.method.encode(), request.path.encode(), await request.read()):
        mac.update(len(part).to_bytes(8, "big"))
        mac.update(part)
    return mac.digest()


def _answer(status: int, body: bytes, *, replayed: bool = False) -> web.Response:
    headers = {"Idempotent-Replayed": "true"} if replayed else None
    return web.Response(body=body, status=status, content_type="application/json", headers=headers)


async def _execute(request: web.Request, scope: str, work: Work) -> web.Response:
    """Run `work` in one transaction, honouring an Idempotency-Key on POST."""
    key = _idempotency_key(request) if request.method == "POST" else None
    fingerprint = await _fingerprint(request) if key is not None else b""
    async with request.app[POOL].acquire() as conn, conn.transaction():
        if key is not None:
            prior = await store.claim_idempotency_key(conn, scope, key)
            if prior is not None:
                if not hmac.compare_digest(prior.fingerprint, fingerprint):
                    raise ApiError(
                        422,
                        "idempotency_key_reused",
                        "this Idempotency-Key was used for a different request",
                        "Idempotency-Key",
                    )
                return _answer(prior.status, prior.body, replayed=True)
        status, answer = await work(conn)
        body = _encoder.encode(answer)
        if key is not None:
            await store.save_idempotency_key(
                conn, scope, key, store.StoredAnswer(fingerprint, status, body)
            )
    return _answer(status, body)


async def _publish(request: web.Request, event: Event) -> Position:
    """Append and wait for the ack, bounded: a broker that is down answers 503, never a hang."""
    settings = request.app[SETTINGS]
    try:
        # Covers send()'s metadata wait too, which the publisher's own timeout does not; and
        # cancelling send() before it queued the record keeps it off the log.
        async with asyncio.timeout(settings.produce_timeout_s):
            return await request.app[PUBLISHER].publish(event)
    except (KafkaError, TimeoutError) as exc:
        log.warning("produce of %s failed: %r", event.id, exc)
        raise ApiError(
            503, "log_unavailable", "the event log did not acknowledge the event; retry later"
        ) from None


async def _in_thread(fn: Callable[..., T], *args: object) -> T:
    # argon2 takes tens of milliseconds of CPU by design; off the loop, other requests go on.
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


# ---------------------------------------------------------------- accounts and sessions


async def register(request: web.Request) -> web.Response:
    body = await read_body(request, NewAccount)
    request_id = request[REQUEST_ID]
    password_hash = await _in_thread(hash_password, body.password)
    cmd = decide.RegisterAccount(
        user_id=request.app[IDS].next_id(), username=body.username, display_name=body.display_name
    )

    async def work(conn: asyncpg.Connection) -> tuple[int, Struct]:
        taken = await store.username_taken(conn, cmd.username)
        event = decide.register_account(cmd, username_taken=taken, request_id=request_id)
        try:
            await store.insert_account(conn, cmd.user_id, cmd.username, password_hash)
        except asyncpg.UniqueViolationError:
            # A concurrent registration of the same name committed between our check and insert.
            raise decide.username_taken_error() from None
        position = await _publish(request, event)
        return 201, AccountCreated(str(cmd.user_id), cmd.username, str(position))

    return await _execute(request, ANONYMOUS_SCOPE, work)


async def login(request: web.Request) -> web.Response:
    body = await read_body(request, Login)
    # Validated for a uniform API but not stored: a login appends nothing, so a retry is
    # harmless, and keeping issued tokens in a table would only make them leakable.
    _idempotency_key(request)
    settings = request.app[SETTINGS]
    async with request.app[POOL].acquire() as conn:
        creds = await store.find_credentials(conn, body.username)
    # An unknown name is checked against a dummy hash, so timing does not reveal which names exist.
    ok = await _in_thread(verify_password, creds.password_hash if creds else None, body.password)
    if creds is None or not ok:
        raise ApiError(401, "invalid_credentials", "username or password is wrong")
    token, expires = issue_token(settings.token_secret, creds.user_id, settings.token_ttl_s)
    return json_response(
        SessionCreated(token, str(creds.user_id), datetime.fromtimestamp(expires, UTC))
    )


# ---------------------------------------------------------------- posts


async def create_post(request: web.Request) -> web.Response:
    actor = _actor(request)
    body = await read_body(request, NewPost)
    cmd = decide.CreatePost(actor_id=actor, post_id=request.app[IDS].next_id(), text=body.text)
    event = decide.create_post(cmd, request_id=request[REQUEST_ID])

    async def work(conn: asyncpg.Connection) -> tuple[int, Struct]:
        await store.insert_post(conn, cmd.post_id, actor)
        position = await _publish(request, event)
        return 202, PostAccepted(str(cmd.post_id), str(event.id), str(position))

    return await _execute(request, _user_scope(actor), work)


async def delete_post(request: web.Request) -> web.Response:
    actor = _actor(request)
    cmd = decide.DeletePost(
        actor_id=actor, post_id=parse_id(request.match_info["post_id"], "post_id")
    )

    async def work(conn: asyncpg.Connection) -> tuple[int, Struct]:
        post = await store.lock_post(conn, cmd.post_id)
        event = decide.delete_post(cmd, post, request_id=request[REQUEST_ID])
        await store.mark_post_deleted(conn, cmd.post_id)
        position = await _publish(request, event)
        return 202, PostAccepted(str(cmd.post_id), str(event.id), str(position))

    return await _execute(request, _user_scope(actor), work)


# ---------------------------------------------------------------- follows and blocks


async def _relate(
    request: web.Request, decision: decide.Decision, *, with_blocks: bool
) -> web.Response:
    actor = _actor(request)
    target = parse_id(request.match_info["user_id"], "user_id")
    cmd = decide.Relate(actor_id=actor, target_id=target)

    async def work(conn: asyncpg.Connection) -> tuple[int, Struct]:
        facts = await store.target_facts(conn, actor, cmd.target_id, with_blocks=with_blocks)
        event = decision(cmd, facts, request_id=request[REQUEST_ID])
        position = await _publish(request, event)
        return 202, EventAccepted(str(event.id), str(position))

    return await _execute(request, _user_scope(actor), work)


async def follow(request: web.Request) -> web.Response:
    return await _relate(request, decide.follow, with_blocks=True)


async def unfollow(request: web.Request) -> web.Response:
    return await _relate(request, decide.unfollow, with_blocks=False)


async def block(request: web.Request) -> web.Response:
    return await _relate(request, decide.block, with_blocks=False)


async def unblock(request: web.Request) -> web.Response:
    return await _relate(request, decide.unblock, with_blocks=False)


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


def _actor(request: web.Request) -> int:
    actor = bearer_user(request, request.app[SETTINGS].token_secret)
    assert actor is not None  # required=True raises instead of returning None
    return actor
