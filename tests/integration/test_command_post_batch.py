"""Group-committed posts against real Kafka and PostgreSQL: concurrent posts each land exactly
once with their own position, a bad row fails alone, bad input writes nothing, and the
internal records are cleaned up once the events are acknowledged."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg
import msgspec
import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer

from services.command import post_batch, post_store
from services.command.app import create_app
from services.command.idempotency import INTERNAL_SCOPE
from services.command.pipeline import relay_pending
from services.command.post_batch import POST_WRITER
from shared.events import PostCreated, PostCreatedData, new_event
from shared.kafka import Position
from shared.settings import Settings
from tests.integration.test_command_api import PASSWORD, Client, Log, call, new_name, signup
from tests.integration.test_command_api import log as log

pytestmark = pytest.mark.integration

POSTS = 40


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def client(settings: Settings) -> AsyncIterator[Client]:
    async with TestClient(TestServer(create_app(settings))) as c:
        yield c


async def internal_records(db: asyncpg.Connection, event_ids: list[str]) -> int:
    """Internal records left of these posts (the hot path keys them by event id)."""
    count: int = await db.fetchval(
        "SELECT count(*) FROM cmd_idempotency WHERE scope = $1 AND key = ANY ($2::text[])",
        INTERNAL_SCOPE,
        [uuid.UUID(e).hex for e in event_ids],
    )
    return count


async def settled(db: asyncpg.Connection, event_ids: list[str]) -> int:
    """Internal records left once the clean-up, which runs after the answers, had a moment."""
    assert event_ids
    for _ in range(100):
        if (left := await internal_records(db, event_ids)) == 0:
            return 0
        await asyncio.sleep(0.05)
    return left


async def test_concurrent_posts_land_once_each_with_their_own_position(
    client: Client, log: Log, db: asyncpg.Connection
) -> None:
    users = [await signup(client) for _ in range(4)]
    before = await log.size()
    answers = await asyncio.gather(
        *(
            call(client, "POST", "/v1/posts", {"text": f"batch {i}"}, token=users[i % 4][1])
            for i in range(POSTS)
        )
    )
    assert {status for status, _, _ in answers} == {202}
    assert await log.size() == before + POSTS
    assert len({body["position"] for _, body, _ in answers}) == POSTS
    for i, (_, body, _) in enumerate(answers):
        event, _ = await log.at(body["position"])
        assert isinstance(event, PostCreated)
        assert (event.data.text, str(event.data.post_id), str(event.id)) == (
            f"batch {i}",
            body["post_id"],
            body["event_id"],
        )
        assert event.data.author_id == int(users[i % 4][0])
    stored = await db.fetchval(
        "SELECT count(*) FROM cmd_posts WHERE post_id = ANY ($1::bigint[])",
        [int(body["post_id"]) for _, body, _ in answers],
    )
    assert stored == POSTS
    assert await settled(db, [body["event_id"] for _, body, _ in answers]) == 0


async def test_bad_input_among_concurrent_posts_writes_nothing(
    client: Client, log: Log, db: asyncpg.Connection
) -> None:
    _, token = await signup(client)
    bodies = [
        {"text": "good one"},
        {"text": "   "},
        {"text": "audience without id", "visibility": "audience"},
        {"text": "good two"},
        {"text": "bad reply", "in_reply_to_id": "1"},
        {"text": "nul", "media": [{"kind": "image", "url": "https://x.io/a", "alt_text": "\x00"}]},
    ]
    before = await log.size()
    answers = await asyncio.gather(
        *(call(client, "POST", "/v1/posts", b, token=token) for b in bodies)
    )
    assert [status for status, _, _ in answers] == [202, 422, 422, 202, 422, 422]
    fields = [a[1].get("field") for a in answers if a[0] == 422]
    assert fields == ["text", "audience_id", "in_reply_to_id", "media[0].alt_text"]
    assert await log.size() == before + 2
    assert await settled(db, [a[1]["event_id"] for a in answers if a[0] == 202]) == 0


async def test_mentions_and_replies_are_looked_up_before_batching(client: Client, log: Log) -> None:
    bob = new_name()
    status, account, _ = await call(
        client, "POST", "/v1/accounts", {"username": bob, "password": PASSWORD}
    )
    assert status == 201
    status, session, _ = await call(
        client, "POST", "/v1/sessions", {"username": bob, "password": PASSWORD}
    )
    _, token = await signup(client)
    status, root, _ = await call(
        client, "POST", "/v1/posts", {"text": "root"}, token=session["token"]
    )
    assert status == 202
    status, reply, _ = await call(
        client,
        "POST",
        "/v1/posts",
        {"text": f"hi @{bob}", "in_reply_to_id": root["post_id"]},
        token=token,
    )
    assert status == 202, reply
    event, _ = await log.at(reply["position"])
    assert isinstance(event, PostCreated)
    assert event.data.in_reply_to_author_id == int(account["user_id"])
    assert [m.user_id for m in event.data.mentions] == [int(account["user_id"])]


async def test_a_row_the_database_refuses_fails_alone(
    client: Client, log: Log, db: asyncpg.Connection
) -> None:
    user_id, _ = await signup(client)
    writer = client.server.app[POST_WRITER]

    def post(post_id: int, text: str) -> PostCreated:
        return new_event(
            PostCreated,
            actor_id=int(user_id),
            data=PostCreatedData(post_id=post_id, author_id=int(user_id), text=text),
        )

    base = 9_000_000_000 + int(user_id) % 1_000_000 * 10
    events = [post(base, "first"), post(base + 1, "other"), post(base, "same id again")]
    before = await log.size()
    outcomes = await asyncio.gather(
        *(writer.create(e, e.id.hex) for e in events), return_exceptions=True
    )
    positions = [o for o in outcomes if isinstance(o, Position)]
    refused = [o for o in outcomes if isinstance(o, asyncpg.UniqueViolationError)]
    assert (len(positions), len(refused)) == (2, 1), outcomes
    assert await log.size() == before + 2
    assert await settled(db, [str(e.id) for e in events]) == 0


async def test_a_keyed_post_still_replays_its_first_answer(client: Client, log: Log) -> None:
    _, token = await signup(client)
    key = {"Idempotency-Key": "batch-replay-1"}
    status, first, _ = await call(
        client, "POST", "/v1/posts", {"text": "keyed"}, token=token, headers=key
    )
    assert status == 202
    before = await log.size()
    status, again, headers = await call(
        client, "POST", "/v1/posts", {"text": "keyed"}, token=token, headers=key
    )
    assert (status, again) == (202, first) and headers["Idempotent-Replayed"] == "true"
    assert await log.size() == before


async def test_a_login_name_with_nul_is_refused_by_name(client: Client) -> None:
    # read_body refuses U+0000 in any field before the handler runs (shared/http.py).
    status, problem, _ = await call(
        client, "POST", "/v1/sessions", {"username": "a\x00b", "password": PASSWORD}
    )
    assert (status, problem["field"]) == (422, "username"), problem


async def test_the_relay_publishes_a_batch_record_left_by_a_crash(
    client: Client, log: Log, db: asyncpg.Connection
) -> None:
    """A process that died between the batch's commit and the produce leaves exactly this."""
    user_id, _ = await signup(client)
    event = new_event(
        PostCreated,
        actor_id=int(user_id),
        data=PostCreatedData(
            post_id=8_000_000_000 + int(user_id) % 1_000_000, author_id=int(user_id), text="x"
        ),
    )
    await post_store.record_new_posts(
        db, INTERNAL_SCOPE, [post_batch.new_post_row(event, event.id.hex)]
    )
    await db.execute(
        "UPDATE cmd_idempotency SET created_at = now() - interval '1 minute'"
        " WHERE scope = $1 AND key = $2",
        INTERNAL_SCOPE,
        event.id.hex,
    )
    before = await log.size()
    assert await relay_pending(client.server.app, older_than_s=30) >= 1
    assert await log.size() >= before + 1
    row = await db.fetchrow(
        "SELECT pending_events, body FROM cmd_idempotency WHERE scope = $1 AND key = $2",
        INTERNAL_SCOPE,
        event.id.hex,
    )
    assert row is not None and row["pending_events"] is None
    answer = msgspec.json.decode(row["body"])
    relayed, _ = await log.at(answer["position"])
    assert relayed == event
