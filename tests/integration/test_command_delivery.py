"""The command service decides each new post's delivery (hybrid fan-out) from the author's
active followers in PostgreSQL, and writes it into the event on Kafka."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import msgspec
import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer

from services.command.app import create_app
from services.command.delivery import WideAuthors
from shared.events import PostCreated
from shared.settings import Settings
from tests.integration.test_command_api import Client, Log, call, signup
from tests.integration.test_command_api import log as log

pytestmark = pytest.mark.integration

THRESHOLD = 2


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def client(settings: Settings) -> AsyncIterator[Client]:
    app = create_app(msgspec.structs.replace(settings, pull_threshold=THRESHOLD))
    async with TestClient(TestServer(app)) as c:
        yield c


async def followed_by(db: asyncpg.Connection, followee: str, count: int, active: bool) -> None:
    """`count` follow rows of `followee`, as the projector writes them."""
    for _ in range(count):
        await db.execute(
            "INSERT INTO follows (follower_id, followee_id, active, version, since)"
            " VALUES ($1, $2, $3, $4, now())",
            10**15 + uuid.uuid4().int % 10**14,
            int(followee),
            active,
            uuid.uuid4(),
        )


async def delivery(client: Client, log: Log, token: str, body: dict[str, object]) -> str:
    status, answer, _ = await call(client, "POST", "/v1/posts", body, token=token)
    assert status == 202, answer
    event, _ = await log.at(answer["position"])
    assert isinstance(event, PostCreated)
    return event.data.delivery


async def test_posts_of_authors_with_many_followers_are_pulled(
    client: Client, log: Log, db: asyncpg.Connection
) -> None:
    wide, wide_token = await signup(client)
    narrow, narrow_token = await signup(client)
    await followed_by(db, wide, THRESHOLD, active=True)
    await followed_by(db, narrow, THRESHOLD - 1, active=True)
    await followed_by(db, narrow, 5, active=False)  # ended follows don't count

    assert await delivery(client, log, wide_token, {"text": "to many"}) == "pull"
    followers_only = {"text": "to followers", "visibility": "followers"}
    assert await delivery(client, log, wide_token, followers_only) == "pull"
    # A direct post's readers are the mentioned users: written, whoever the author is.
    direct = {"text": "psst", "visibility": "direct"}
    assert await delivery(client, log, wide_token, direct) == "push"
    assert await delivery(client, log, narrow_token, {"text": "to few"}) == "push"


async def test_a_keyed_post_is_decided_the_same_way(
    client: Client, log: Log, db: asyncpg.Connection
) -> None:
    wide, token = await signup(client)
    await followed_by(db, wide, THRESHOLD, active=True)
    status, answer, _ = await call(
        client,
        "POST",
        "/v1/posts",
        {"text": "keyed"},
        token=token,
        headers={"Idempotency-Key": uuid.uuid4().hex},
    )
    assert status == 202, answer
    event, _ = await log.at(answer["position"])
    assert isinstance(event, PostCreated) and event.data.delivery == "pull"


async def test_the_answer_is_kept_per_author_and_zero_turns_pull_off(
    db: asyncpg.Connection,
) -> None:
    author = 10**15 + 7_000_000 + uuid.uuid4().int % 10**6
    wide = WideAuthors(threshold=1)
    assert not await wide.is_wide(db, author)
    await followed_by(db, str(author), 1, active=True)
    assert not await wide.is_wide(db, author)  # kept for TTL_S: counts move slowly
    assert await WideAuthors(threshold=1).is_wide(db, author)
    assert not await WideAuthors(threshold=0).is_wide(db, author)
