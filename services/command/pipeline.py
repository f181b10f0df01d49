"""The command pipeline every handler shares: authenticate, run in one transaction, publish.

Without an Idempotency-Key, a command runs in one PostgreSQL transaction that stays open while
the event is produced and commits only after the broker acknowledged it. A refused command or a
failed produce rolls back every command-side write, and a 2xx always names an event that is
durably on the log (invariant 2). The gap: the broker acks, then the process dies before the
commit; the event is on the log without its command-side row and the client sees no answer.

A POST with an Idempotency-Key closes that gap for clients that retry: the decided events are
stored with the key and committed *before* they are produced; after the ack the final answer
(with its position) replaces them. A retry that finds events still pending re-publishes those
same events (same event ids, same post ids) rather than deciding again, so a crash anywhere
between decision and answer yields one logical event; at worst the log holds a second copy of
it with the same id, which every projection absorbs (ids are primary keys, registers are
versioned by event id). A 503 on such a request means "retry with the same key"; pending events
nobody retries are published by a background relay (`relay_pending`), so none is stranded.

New posts sent without a key, the hot path, don't come through here one by one: post_batch.py
records, publishes and answers them in groups, with the same guarantees.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Final, TypeVar

import asyncpg
import msgspec
from aiohttp import web
from aiokafka.errors import KafkaError
from msgspec import Struct

from services.command import idempotency
from services.command.observability import METRICS
from services.command.resources import ACTOR, POOL, PUBLISHER, REQUEST_ID, SETTINGS
from shared import codec
from shared.auth import TokenClaims, verify_token
from shared.events import Event, type_tag
from shared.http import ApiError, read_body
from shared.kafka import Position
from shared.revocations import REVOCATIONS

log = logging.getLogger("microblog.command")
T = TypeVar("T")

ANONYMOUS_SCOPE: Final = "anonymous"
# A client trickling its body slower than this is cut off, so it can't hold a handler forever.
BODY_READ_TIMEOUT_S: Final = 10.0
_encoder: Final = msgspec.json.Encoder()
_IDEMPOTENCY_KEY: Final = re.compile(r"[\x20-\x7e]{1,200}")


class PostAccepted(Struct, frozen=True):
    post_id: str
    event_id: str
    position: str


class EventAccepted(Struct, frozen=True):
    event_id: str
    position: str


Work = Callable[[asyncpg.Connection], Awaitable[tuple[int, Struct]]]


# ---------------------------------------------------------------- authentication


async def authenticate(request: web.Request) -> TokenClaims:
    """The bearer token's claims; 401 when missing, tampered with, expired or logged out."""
    header = request.headers.get("Authorization", "")
    if not header:
        raise ApiError(401, "unauthorized", "Authorization: Bearer <token> required")
    scheme, _, token = header.partition(" ")
    claims = (
        verify_token(request.app[SETTINGS].token_secret, token.strip())
        if scheme.lower() == "bearer"
        else None
    )
    if claims is None or await request.app[REVOCATIONS].is_revoked(request.app[POOL], claims):
        raise ApiError(401, "invalid_token", "token is invalid, expired or revoked")
    request[ACTOR] = claims.user_id
    return claims


async def actor(request: web.Request) -> int:
    """The acting user's id, from the token only, never from the body."""
    return (await authenticate(request)).user_id


def user_scope(user_id: int) -> str:
    return f"user:{user_id}"


async def body(request: web.Request, model: type[T]) -> T:
    """Decode the JSON body into `model`, bounded in time as well as in size."""
    try:
        async with asyncio.timeout(BODY_READ_TIMEOUT_S):
            return await read_body(request, model)
    except TimeoutError:
        raise ApiError(408, "request_timeout", "the request body arrived too slowly") from None


async def optional_body(request: web.Request, model: type[T], default: T) -> T:
    """Like `body`, but an empty body means `default`."""
    try:
        async with asyncio.timeout(BODY_READ_TIMEOUT_S):
            raw = await request.read()
    except TimeoutError:
        raise ApiError(408, "request_timeout", "the request body arrived too slowly") from None
    return await body(request, model) if raw else default


# ---------------------------------------------------------------- idempotency and transaction


def idempotency_key(request: web.Request) -> str | None:
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


# Stands in for the position while a keyed command's events are only recorded, not produced.
PLACEHOLDER: Final = Position(0, 0)
_DEFERRED: Final = web.RequestKey("deferred_events", list)


INTERNAL_SCOPE: Final = idempotency.INTERNAL_SCOPE


async def execute(request: web.Request, scope: str, work: Work) -> web.Response:
    """Run `work` and publish its events, honouring an Idempotency-Key on POST.

    Every POST records its decided events before producing them (see the module docstring);
    one sent without a key gets a key of our own, so a produce that times out after the client
    queued the record, or a crash after the ack, never leaves the event on the log without its
    command-side rows: the relay re-publishes the same event and nothing is decided twice.
    PUT, PATCH and DELETE commands are idempotent by nature and run in one transaction.
    """
    key = idempotency_key(request) if request.method == "POST" else None
    if request.method != "POST":
        async with request.app[POOL].acquire() as conn, conn.transaction():
            status, answer = await work(conn)
        return _answer(status, _encoder.encode(answer))
    internal = key is None
    if key is None:
        scope, key = INTERNAL_SCOPE, uuid.uuid4().hex
    fingerprint = b"" if internal else await _fingerprint(request)
    async with request.app[POOL].acquire() as conn:
        held: contextlib.AbstractAsyncContextManager[None] = (
            contextlib.nullcontext() if internal else idempotency.hold_key(conn, scope, key)
        )
        async with held:
            return await _execute_post(request, conn, scope, key, fingerprint, work)


async def _execute_post(
    request: web.Request,
    conn: asyncpg.Connection,
    scope: str,
    key: str,
    fingerprint: bytes,
    work: Work,
) -> web.Response:
    """`execute` for a POST, with (scope, key) held by the caller."""
    internal = scope == INTERNAL_SCOPE
    async with conn.transaction():
        prior = None if internal else await idempotency.claim_idempotency_key(conn, scope, key)
        if prior is not None:
            if not hmac.compare_digest(prior.fingerprint, fingerprint):
                raise ApiError(
                    422,
                    "idempotency_key_reused",
                    "this Idempotency-Key was used for a different request",
                    "Idempotency-Key",
                )
            if not prior.pending_events:
                return _answer(prior.status, prior.body, replayed=True)
            status, body, pending = prior.status, prior.body, prior.pending_events
        else:
            request[_DEFERRED] = []
            status, answer = await work(conn)
            events: list[Event] = request[_DEFERRED]
            del request[_DEFERRED]
            body = _encoder.encode(answer)
            pending = tuple(codec.encode(e) for e in events)
            if not pending and internal:
                return _answer(status, body)
            await idempotency.save_idempotency_key(
                conn, scope, key, idempotency.StoredAnswer(fingerprint, status, body, pending)
            )
            if not pending:
                return _answer(status, body)
    body = await _publish_pending(request.app, pending, body)
    if internal:
        # Nobody can replay a key they never saw: forget it once the event is durable.
        await idempotency.forget_idempotency_key(conn, scope, key)
    else:
        await idempotency.settle_idempotency_key(conn, scope, key, body)
    return _answer(status, body, replayed=prior is not None)


async def _publish_pending(app: web.Application, pending: tuple[bytes, ...], body: bytes) -> bytes:
    """Produce recorded events in order; return the answer with the real position filled in."""
    position = PLACEHOLDER
    for raw in pending:
        position = await _produce(app, codec.decode(raw))
    doc = msgspec.json.decode(body)
    if isinstance(doc, dict) and doc.get("position") == str(PLACEHOLDER):
        doc["position"] = str(position)
    return _encoder.encode(doc)


async def relay_pending(app: web.Application, older_than_s: float = 30.0) -> int:
    """Publish events of keyed commands whose client never came back; returns how many keys."""
    pool = app[POOL]
    done = 0
    for scope, key in await idempotency.stale_pending_keys(pool, older_than_s):
        async with pool.acquire() as conn, conn.transaction():
            prior = await idempotency.claim_idempotency_key(conn, scope, key)
            if prior is None or not prior.pending_events:
                continue  # a retry got there first
            body = await _publish_pending(app, prior.pending_events, prior.body)
            await idempotency.settle_idempotency_key(conn, scope, key, body)
            done += 1
    return done


async def publish(request: web.Request, event: Event) -> Position:
    """Append and wait for the ack, bounded: a broker that is down answers 503, never a hang.

    Inside a keyed command the event is only recorded here; `execute` produces it after the
    record commits.
    """
    deferred = request.get(_DEFERRED)
    if deferred is not None:
        deferred.append(event)
        return PLACEHOLDER
    return await _produce(request.app, event)


async def _produce(app: web.Application, event: Event) -> Position:
    settings = app[SETTINGS]
    metrics = app[METRICS]
    started = time.perf_counter()
    try:
        # Covers send()'s metadata wait too, which the publisher's own timeout does not; and
        # cancelling send() before it queued the record keeps it off the log.
        async with asyncio.timeout(settings.produce_timeout_s):
            position = await app[PUBLISHER].publish(event)
    except (KafkaError, TimeoutError) as exc:
        log.warning("produce of %s failed: %r", event.id, exc)
        # The record may already sit in the client's queue and reach the log later; the event
        # is recorded (execute), so a retry with the same key, or the relay, appends it once.
        raise ApiError(
            503,
            "log_unavailable",
            "the event log did not acknowledge the event in time; it may still be appended."
            " Retry with the same Idempotency-Key",
        ) from None
    metrics.produce.observe(time.perf_counter() - started)
    metrics.events.labels(type_tag(type(event))).inc()
    return position


async def in_thread(fn: Callable[..., T], *args: object) -> T:
    # argon2 takes tens of milliseconds of CPU by design; off the loop, other requests go on.
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


def request_id(request: web.Request) -> str:
    return request[REQUEST_ID]
