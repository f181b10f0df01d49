"""A keyed command whose process died between the broker's ack and the answer: the retry
re-publishes the recorded event instead of deciding again, so one logical post stays one post
(one event id, one post id), and the relay settles keys nobody retries."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import msgspec
import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer

from services.command.app import create_app
from services.command.pipeline import relay_pending
from shared import codec
from shared.events import PostCreated
from shared.settings import Settings
from tests.integration.test_command_api import Client, Log, call, signup
from tests.integration.test_command_api import log as log

pytestmark = pytest.mark.integration


@pytest_asyncio.fixture(loop_scope="session")
async def client(settings: Settings) -> AsyncIterator[Client]:
    async with TestClient(TestServer(create_app(settings))) as c:
        yield c


async def rewind_to_pending(db: asyncpg.Connection, key: str, event: bytes, age_s: int) -> None:
    """Put the key back in the state a crash after the ack leaves it in."""
    status = await db.execute(
        "UPDATE cmd_idempotency SET pending_events = ARRAY[$2::bytea],"
        " body = convert_to(jsonb_set(convert_from(body, 'UTF8')::jsonb,"
        " '{position}', '\"0:0\"')::text, 'UTF8'),"
        " created_at = now() - make_interval(secs => $3) WHERE key = $1",
        key,
        event,
        float(age_s),
    )
    assert status == "UPDATE 1"


async def test_retry_after_a_crash_republishes_the_same_event(
    client: Client, log: Log, db: asyncpg.Connection
) -> None:
    _, token = await signup(client)
    key = "crash-retry-1"
    status, first, _ = await call(
        client,
        "POST",
        "/v1/posts",
        {"text": "once"},
        token=token,
        headers={"Idempotency-Key": key},
    )
    assert status == 202
    event, _ = await log.at(first["position"])
    assert isinstance(event, PostCreated)
    await rewind_to_pending(db, key, codec.encode(event), age_s=0)

    status, retried, headers = await call(
        client,
        "POST",
        "/v1/posts",
        {"text": "once"},
        token=token,
        headers={"Idempotency-Key": key},
    )
    assert status == 202 and headers["Idempotent-Replayed"] == "true"
    assert retried["post_id"] == first["post_id"] and retried["event_id"] == first["event_id"]
    again, _ = await log.at(retried["position"])
    # The same event (same id, same post) — never a second decision.
    assert again == event
    # Settled: a third call replays the stored answer without producing.
    size = await log.size()
    status, third, _ = await call(
        client,
        "POST",
        "/v1/posts",
        {"text": "once"},
        token=token,
        headers={"Idempotency-Key": key},
    )
    assert third == retried and await log.size() == size


async def test_relay_publishes_events_nobody_retried(
    client: Client, log: Log, db: asyncpg.Connection
) -> None:
    _, token = await signup(client)
    key = "crash-relay-1"
    status, first, _ = await call(
        client,
        "POST",
        "/v1/posts",
        {"text": "stranded"},
        token=token,
        headers={"Idempotency-Key": key},
    )
    assert status == 202
    event, _ = await log.at(first["position"])
    await rewind_to_pending(db, key, codec.encode(event), age_s=120)

    assert await relay_pending(client.server.app, older_than_s=60) >= 1
    row = await db.fetchrow("SELECT pending_events, body FROM cmd_idempotency WHERE key = $1", key)
    assert row["pending_events"] is None
    body = msgspec.json.decode(row["body"])
    assert body["position"] != "0:0" and body["event_id"] == first["event_id"]
    relayed, _ = await log.at(body["position"])
    assert relayed == event
