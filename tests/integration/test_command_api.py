"""The command service's HTTP API against real Kafka and PostgreSQL (no mocks).

Each test reads the topic's end offsets before and after, so "no event was written" is checked
on the log itself, not inferred from a status code.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import msgspec
import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from aiokafka import AIOKafkaConsumer, TopicPartition

from services.command import idempotency
from services.command.app import create_app
from services.command.resources import POOL, PRODUCER
from shared import codec
from shared.events import FollowCreated, PostCreated, PostDeleted, UserRegistered
from shared.kafka import Position
from shared.settings import Settings

pytestmark = pytest.mark.integration

Client = TestClient[web.Request, web.Application]
PASSWORD = "correct horse battery"


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def client(settings: Settings) -> AsyncIterator[Client]:
    async with TestClient(TestServer(create_app(settings))) as c:
        yield c


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def log(settings: Settings) -> AsyncIterator[Log]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers, enable_auto_commit=False
    )
    await consumer.start()
    try:
        yield Log(consumer, settings)
    finally:
        await consumer.stop()


class Log:
    """Reads the events topic directly, as an analytics consumer would."""

    def __init__(self, consumer: AIOKafkaConsumer, settings: Settings) -> None:
        self.consumer = consumer
        self.parts = [TopicPartition(settings.topic, p) for p in range(settings.topic_partitions)]

    async def size(self) -> int:
        return sum((await self.consumer.end_offsets(self.parts)).values())

    async def at(self, position: str) -> tuple[Any, dict[str, bytes]]:
        pos = Position.parse(position)
        tp = self.parts[pos.partition]
        self.consumer.assign([tp])
        self.consumer.seek(tp, pos.offset)
        record = await asyncio.wait_for(self.consumer.getone(), 10)
        assert record.offset == pos.offset
        return codec.decode(record.value), dict(record.headers)


def new_name() -> str:
    return f"u{uuid.uuid4().hex[:12]}"


async def call(
    client: Client,
    method: str,
    path: str,
    body: Any = None,
    *,
    token: str | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any, Any]:
    hdrs = dict(headers or {})
    if token:
        hdrs["Authorization"] = f"Bearer {token}"
    data = body if isinstance(body, bytes) else None if body is None else msgspec.json.encode(body)
    if data is not None:
        hdrs.setdefault("Content-Type", "application/json")
    resp = await client.request(method, path, data=data, headers=hdrs)
    answer = await resp.json(content_type=None)
    if resp.status >= 400:
        assert resp.content_type == "application/problem+json", answer
    return resp.status, answer, resp.headers


async def signup(client: Client) -> tuple[str, str]:
    """A fresh user; returns (user_id, token)."""
    name = new_name()
    status, body, _ = await call(
        client, "POST", "/v1/accounts", {"username": name, "password": PASSWORD}
    )
    assert status == 201, body
    status, session, _ = await call(
        client, "POST", "/v1/sessions", {"username": name, "password": PASSWORD}
    )
    assert status == 200, session
    return body["user_id"], session["token"]


# ---------------------------------------------------------------- accounts and sessions


async def test_register_then_duplicate_in_other_case_is_409(client: Client, log: Log) -> None:
    name = new_name()
    status, body, _ = await call(
        client,
        "POST",
        "/v1/accounts",
        {"username": name, "password": PASSWORD, "display_name": "Ann"},
    )
    assert status == 201, body
    assert body["username"] == name and body["user_id"].isdigit()
    event, headers = await log.at(body["position"])
    assert isinstance(event, UserRegistered)
    assert headers["ce_type"] == b"user.registered"
    assert event.data.user_id == int(body["user_id"]) and event.data.display_name == "Ann"
    assert PASSWORD.encode() not in codec.encode(event)

    before = await log.size()
    status, problem, _ = await call(
        client, "POST", "/v1/accounts", {"username": name.upper(), "password": PASSWORD}
    )
    assert (status, problem["code"], problem["field"]) == (409, "username_taken", "username")
    assert await log.size() == before


async def test_register_validates_its_input(client: Client, log: Log) -> None:
    before = await log.size()
    for body, field in [
        ({"username": "has space", "password": PASSWORD}, "username"),
        ({"username": "x" * 31, "password": PASSWORD}, "username"),
        ({"username": new_name(), "password": "short"}, "password"),
        ({"username": new_name(), "password": PASSWORD, "display_name": "d" * 61}, "display_name"),
        ({"password": PASSWORD}, "username"),
    ]:
        status, problem, _ = await call(client, "POST", "/v1/accounts", body)
        assert (status, problem["field"]) == (422, field), problem
    assert await log.size() == before


async def test_login_ok_and_wrong_credentials_look_alike(client: Client) -> None:
    name = new_name()
    _, account, _ = await call(
        client, "POST", "/v1/accounts", {"username": name, "password": PASSWORD}
    )
    status, session, _ = await call(
        client, "POST", "/v1/sessions", {"username": name.upper(), "password": PASSWORD}
    )
    assert status == 200, session
    assert session["user_id"] == account["user_id"] and session["token"]
    assert session["expires_at"].endswith("Z")

    wrong_password = await call(
        client, "POST", "/v1/sessions", {"username": name, "password": PASSWORD + "!"}
    )
    unknown_user = await call(
        client, "POST", "/v1/sessions", {"username": new_name(), "password": PASSWORD}
    )
    for status, problem, _ in (wrong_password, unknown_user):
        assert (status, problem["code"]) == (401, "invalid_credentials")
    assert wrong_password[1] == unknown_user[1]


# ---------------------------------------------------------------- posts


async def test_post_is_on_the_log_when_answered(client: Client, log: Log) -> None:
    user_id, token = await signup(client)
    status, body, headers = await call(
        client,
        "POST",
        "/v1/posts",
        {"text": "hello, log"},
        token=token,
        headers={"X-Request-Id": "trace-42"},
    )
    assert status == 202, body
    assert headers["X-Request-Id"] == "trace-42"
    event, record_headers = await log.at(body["position"])
    assert record_headers["ce_type"] == b"post.created"
    assert record_headers["ce_id"] == body["event_id"].encode()
    assert isinstance(event, PostCreated)
    assert str(event.id) == body["event_id"]
    assert event.data.post_id == int(body["post_id"])
    assert event.data.author_id == int(user_id) and event.data.text == "hello, log"
    assert event.requestid == "trace-42"


async def test_blank_or_long_text_is_422_and_writes_nothing(client: Client, log: Log) -> None:
    _, token = await signup(client)
    before = await log.size()
    for text in ["   \n", "", "x" * 501]:
        status, problem, _ = await call(client, "POST", "/v1/posts", {"text": text}, token=token)
        assert (status, problem["field"]) == (422, "text"), problem
    assert await log.size() == before


async def test_unknown_field_is_named_and_writes_nothing(client: Client, log: Log) -> None:
    _, token = await signup(client)
    before = await log.size()
    status, problem, _ = await call(
        client, "POST", "/v1/posts", {"text": "hi", "author_id": "1"}, token=token
    )
    assert (status, problem["code"], problem["field"]) == (422, "unknown_field", "author_id")
    assert await log.size() == before


async def test_nul_character_is_422_naming_the_field_and_writes_nothing(
    client: Client, log: Log
) -> None:
    # PostgreSQL text cannot store U+0000: without the check these were 500s at the write.
    _, token = await signup(client)
    before = await log.size()
    cases = [
        ("/v1/posts", {"text": "a\x00b"}, "text"),
        (
            "/v1/posts",
            {
                "text": "hi",
                "media": [{"kind": "image", "url": "https://x.test/a", "alt_text": "\x00"}],
            },
            "media[0].alt_text",
        ),
        ("/v1/accounts", {"username": "nul\x00name", "password": PASSWORD}, "username"),
    ]
    for path, body, field in cases:
        status, problem, _ = await call(client, "POST", path, body, token=token)
        assert (status, problem["field"]) == (422, field), problem
    assert await log.size() == before


async def test_malformed_and_oversize_bodies(client: Client, log: Log, settings: Settings) -> None:
    _, token = await signup(client)
    before = await log.size()
    status, problem, _ = await call(client, "POST", "/v1/posts", b"{not json", token=token)
    assert (status, problem["code"]) == (400, "malformed_json")
    huge = b'{"text": "' + b"x" * settings.max_body_bytes + b'"}'
    status, problem, _ = await call(client, "POST", "/v1/posts", huge, token=token)
    assert (status, problem["code"]) == (413, "body_too_large")
    assert await log.size() == before


async def test_missing_or_bad_token_is_401(client: Client, log: Log) -> None:
    before = await log.size()
    status, problem, _ = await call(client, "POST", "/v1/posts", {"text": "hi"})
    assert status == 401, problem
    status, problem, _ = await call(client, "POST", "/v1/posts", {"text": "hi"}, token="1.2.3.4")
    assert status == 401, problem
    assert await log.size() == before


async def test_only_the_author_deletes_and_only_once(client: Client, log: Log) -> None:
    _, author = await signup(client)
    _, other = await signup(client)
    _, posted, _ = await call(client, "POST", "/v1/posts", {"text": "mine"}, token=author)
    path = f"/v1/posts/{posted['post_id']}"

    before = await log.size()
    status, problem, _ = await call(client, "DELETE", path, token=other)
    assert (status, problem["code"]) == (404, "not_found")
    status, problem, _ = await call(client, "DELETE", "/v1/posts/abc", token=author)
    assert (status, problem["field"]) == (422, "post_id")
    assert await log.size() == before

    status, body, _ = await call(client, "DELETE", path, token=author)
    assert status == 202, body
    event, _ = await log.at(body["position"])
    assert isinstance(event, PostDeleted) and event.data.post_id == int(posted["post_id"])
    status, _, _ = await call(client, "DELETE", path, token=author)
    assert status == 404


# ---------------------------------------------------------------- follows and blocks


async def test_follow_rules(client: Client, log: Log, db: asyncpg.Connection) -> None:
    me, token = await signup(client)
    other, other_token = await signup(client)
    before = await log.size()

    status, problem, _ = await call(client, "PUT", f"/v1/users/{me}/follow", token=token)
    assert (status, problem["code"], problem["field"]) == (422, "cannot_target_self", "user_id")
    status, problem, _ = await call(client, "PUT", "/v1/users/999999/follow", token=token)
    assert (status, problem["code"]) == (404, "not_found")
    assert await log.size() == before

    status, body, _ = await call(client, "PUT", f"/v1/users/{other}/follow", token=token)
    assert status == 202, body
    event, headers = await log.at(body["position"])
    assert isinstance(event, FollowCreated) and headers["ce_type"] == b"follow.created"
    assert (event.data.follower_id, event.data.followee_id) == (int(me), int(other))

    # The block as the projector would record it (its read model is where this fact lives).
    await db.execute(
        "INSERT INTO blocks (blocker_id, blocked_id, active, version, last_block_version, since)"
        " VALUES ($1, $2, true, $3, $3, now())",
        int(other),
        int(me),
        uuid.uuid4(),
    )
    before = await log.size()
    status, problem, _ = await call(client, "PUT", f"/v1/users/{other}/follow", token=token)
    assert (status, problem["code"]) == (422, "blocked")
    assert await log.size() == before
    for method, what in [("DELETE", "follow"), ("PUT", "block"), ("DELETE", "block")]:
        status, body, _ = await call(client, method, f"/v1/users/{other}/{what}", token=token)
        assert status == 202 and ":" in body["position"], body
    status, body, _ = await call(client, "PUT", f"/v1/users/{me}/block", token=other_token)
    assert status == 202, body


# ---------------------------------------------------------------- idempotency


async def test_idempotent_retry_returns_the_first_answer(client: Client, log: Log) -> None:
    _, token = await signup(client)
    key = {"Idempotency-Key": f"k-{uuid.uuid4()}"}
    before = await log.size()
    status, first, headers = await call(
        client, "POST", "/v1/posts", {"text": "once"}, token=token, headers=key
    )
    assert status == 202 and "Idempotent-Replayed" not in headers
    status, again, headers = await call(
        client, "POST", "/v1/posts", {"text": "once"}, token=token, headers=key
    )
    assert (status, again) == (202, first)
    assert headers["Idempotent-Replayed"] == "true"
    assert await log.size() == before + 1

    status, problem, _ = await call(
        client, "POST", "/v1/posts", {"text": "twice"}, token=token, headers=key
    )
    assert (status, problem["code"]) == (422, "idempotency_key_reused")
    # Keys belong to the user: someone else's identical key is a new request.
    _, token2 = await signup(client)
    before = await log.size()
    status, other, _ = await call(
        client, "POST", "/v1/posts", {"text": "once"}, token=token2, headers=key
    )
    assert status == 202 and other["post_id"] != first["post_id"]
    assert await log.size() == before + 1


async def test_concurrent_duplicates_make_one_event(client: Client, log: Log) -> None:
    _, token = await signup(client)
    key = {"Idempotency-Key": str(uuid.uuid4())}
    before = await log.size()
    answers = await asyncio.gather(
        *(
            call(client, "POST", "/v1/posts", {"text": "race"}, token=token, headers=key)
            for _ in range(5)
        )
    )
    assert {status for status, _, _ in answers} == {202}
    assert len({msgspec.json.encode(body) for _, body, _ in answers}) == 1
    assert sum("Idempotent-Replayed" in headers for _, _, headers in answers) == 4
    assert await log.size() == before + 1


async def test_idempotent_registration(client: Client, log: Log) -> None:
    body = {"username": new_name(), "password": PASSWORD}
    key = {"Idempotency-Key": str(uuid.uuid4())}
    before = await log.size()
    first = await call(client, "POST", "/v1/accounts", body, headers=key)
    again = await call(client, "POST", "/v1/accounts", body, headers=key)
    assert first[0] == again[0] == 201 and first[1] == again[1]
    assert await log.size() == before + 1
    status, problem, _ = await call(
        client, "POST", "/v1/accounts", body, headers={"Idempotency-Key": "x" * 201}
    )
    assert (status, problem["field"]) == (422, "Idempotency-Key")


async def test_expired_keys_are_forgotten(client: Client, db: asyncpg.Connection) -> None:
    user_id, token = await signup(client)
    key = str(uuid.uuid4())
    _, first, _ = await call(
        client, "POST", "/v1/posts", {"text": "a"}, token=token, headers={"Idempotency-Key": key}
    )
    await db.execute(
        "UPDATE cmd_idempotency SET created_at = now() - interval '25 hours'"
        " WHERE scope = $1 AND key = $2",
        f"user:{user_id}",
        key,
    )
    # After 24 h the key is free again, even for a different body.
    status, second, headers = await call(
        client, "POST", "/v1/posts", {"text": "b"}, token=token, headers={"Idempotency-Key": key}
    )
    assert status == 202 and second != first and "Idempotent-Replayed" not in headers

    await db.execute("UPDATE cmd_idempotency SET created_at = now() - interval '25 hours'")
    assert await idempotency.purge_expired_keys(client.app[POOL], batch=2) == 2
    while await idempotency.purge_expired_keys(client.app[POOL], batch=2):
        pass
    assert await db.fetchval("SELECT count(*) FROM cmd_idempotency") == 0


# ---------------------------------------------------------------- health and failure


async def test_health_and_readiness(client: Client) -> None:
    for path in ("/healthz", "/readyz"):
        resp = await client.get(path)
        assert resp.status == 200, await resp.text()


async def test_broker_failure_is_503_and_the_event_waits_for_the_relay(
    settings: Settings, db: asyncpg.Connection
) -> None:
    """The log goes away: the command answers 503 quickly, and its decided event stays recorded
    (with its command-side rows) for a retry or the relay, never half-applied."""
    quick = msgspec.structs.replace(settings, produce_timeout_s=2.0)
    async with TestClient(TestServer(create_app(quick))) as c:
        user_id, token = await signup(c)
        await c.app[PRODUCER].stop()  # the log goes away under a running service
        status, problem, _ = await call(c, "POST", "/v1/posts", {"text": "lost"}, token=token)
        assert (status, problem["code"]) == (503, "log_unavailable")
        name = new_name()
        status, problem, _ = await call(
            c, "POST", "/v1/accounts", {"username": name, "password": PASSWORD}
        )
        assert (status, problem["code"]) == (503, "log_unavailable")
    rows = await db.fetch(
        "SELECT pending_events FROM cmd_idempotency WHERE pending_events IS NOT NULL"
    )
    pending = [codec.decode(e) for r in rows for e in r["pending_events"]]
    posts = [e for e in pending if isinstance(e, PostCreated) and e.data.author_id == int(user_id)]
    users = [e for e in pending if isinstance(e, UserRegistered) and e.data.username == name]
    assert [p.data.text for p in posts] == ["lost"] and len(users) == 1
    assert (
        await db.fetchval("SELECT count(*) FROM cmd_posts WHERE author_id = $1", int(user_id)) == 1
    )
