"""`GET /v1/streaming/home` against real PostgreSQL: rows inserted with SQL plus a NOTIFY on
`stream_wakeup` (as the projector sends) arrive as SSE events; a reconnect with Last-Event-ID
gets exactly what it missed."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from services.query.app import create_app
from shared.settings import Settings
from tests.integration import test_query_api as api
from tests.integration.test_query_api import Seed, assert_problem

pytestmark = pytest.mark.integration

client, seed, query_settings = api.client, api.seed, api.query_settings

URL = "/v1/streaming/home"


async def next_event(response: Any) -> dict[str, str]:
    """The next SSE event (comments skipped), as its fields; bounded so a bug can't hang."""
    fields: dict[str, str] = {}
    async with asyncio.timeout(10):
        while True:
            line = (await response.content.readline()).decode()
            if not line:
                raise EOFError("stream ended")
            line = line.rstrip("\n")
            if line == "":
                if fields:
                    return fields
                continue
            if line.startswith(":"):
                continue
            name, _, value = line.partition(": ")
            fields[name] = value


async def wake(db: asyncpg.Connection, *users: int) -> None:
    await db.execute("SELECT pg_notify('stream_wakeup', $1)", ",".join(map(str, users)))


async def test_stream_delivers_and_resumes_without_gaps_or_duplicates(
    client: Any, seed: Seed, db: asyncpg.Connection
) -> None:
    viewer, author, fan = [await seed.user() for _ in range(3)]
    await seed.follow(viewer, author)
    before = await seed.post(author, "before the stream", readers=(viewer,))

    stream = await client.get(URL, headers=seed.auth(viewer))
    assert stream.status == 200
    assert stream.headers["Content-Type"].startswith("text/event-stream")
    assert await stream.content.readline() == b": connected\n"

    first = await seed.post(author, "first", readers=(viewer,))
    await seed.follow(fan, viewer)
    note = await seed.notification(viewer, "follow", fan)
    await wake(db, viewer)
    update = await next_event(stream)
    assert update["event"] == "update"
    assert json.loads(update["data"])["post_id"] == str(first)  # not `before`
    notification = await next_event(stream)
    assert notification["event"] == "notification"
    body = json.loads(notification["data"])
    assert (body["id"], body["type"], body["account"]["user_id"]) == (str(note), "follow", str(fan))

    await seed.delete(before)
    await wake(db, viewer)
    deleted = await next_event(stream)
    assert (deleted["event"], deleted["data"]) == ("delete", str(before))
    resume_from = deleted["id"]
    stream.close()

    # Missed while disconnected, and no NOTIFY at all: the reconnect catches up by itself.
    missed_post = await seed.post(author, "missed", readers=(viewer,))
    await seed.like(fan, missed_post)
    missed_note = await seed.notification(viewer, "like", fan, missed_post)
    await seed.delete(first)
    again = await client.get(URL, headers={"Last-Event-ID": resume_from, **seed.auth(viewer)})
    events = [await next_event(again) for _ in range(3)]
    assert [(e["event"], e["data"] if e["event"] == "delete" else "") for e in events] == [
        ("update", ""),
        ("notification", ""),
        ("delete", str(first)),
    ]
    assert json.loads(events[0]["data"])["post_id"] == str(missed_post)
    assert json.loads(events[1]["data"])["id"] == str(missed_note)
    assert json.loads(events[1]["data"])["post"]["post_id"] == str(missed_post)

    # Without a NOTIFY, the poll fallback still delivers.
    late = await seed.post(author, "late", readers=(viewer,))
    update = await next_event(again)
    assert json.loads(update["data"])["post_id"] == str(late)
    again.close()


async def test_notify_wakes_the_stream_through_the_shared_listener(
    query_settings: Settings, seed: Seed, db: asyncpg.Connection
) -> None:
    # A poll interval far beyond the test's timeout: only the NOTIFY can deliver in time.
    app = create_app(query_settings, stream_poll_s=3600)
    viewer, author = await seed.user(), await seed.user()
    async with TestClient(TestServer(app)) as c:
        stream = await c.get(URL, headers=seed.auth(viewer))
        assert await stream.content.readline() == b": connected\n"
        post = await seed.post(author, readers=(viewer,))
        await wake(db, viewer)
        update = await next_event(stream)
        assert json.loads(update["data"])["post_id"] == str(post)
        stream.close()


async def test_stream_needs_a_token_and_a_valid_cursor(client: Any, seed: Seed) -> None:
    await assert_problem(await client.get(URL), 401, "unauthorized")
    viewer = await seed.user()
    for bad in ("x", "1.2.3", "1.not-a-uuid-at-all-but-36-chars-long.3.4", "-1.0.0.0"):
        await assert_problem(
            await client.get(URL, headers={"Last-Event-ID": bad, **seed.auth(viewer)}),
            400,
            "invalid_last_event_id",
            "Last-Event-ID",
        )
